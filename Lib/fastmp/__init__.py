"""fastmp: Python's multiprocessing package with a C core.

The top-level functions and classes are those of the default context, as
in the standard package: `import fastmp as multiprocessing` is a drop-in.
`fastmp.install()` makes `import multiprocessing` itself resolve to fastmp.
"""
import os
import sys

from . import context
from ._dropin import ENV_VAR as _DROPIN_ENV_VAR, install

__version__ = "0.1.0"

_default = context._default_context
__all__ = [name for name in dir(_default) if not name.startswith('_')]
# `reducer` (the reduction module) and the exception classes (in the C
# core) are looked up on use, in __getattr__: a spawned child that needs
# neither starts faster without loading them
_ON_USE = ('reducer',) + context._CORE_EXCEPTIONS
globals().update((name, getattr(_default, name)) for name in __all__
                 if name not in _ON_USE)
del _default


def __getattr__(name):
    if name == 'reducer':   # may be replaced: looked up every time
        return context._default_context.reducer
    if name in context._CORE_EXCEPTIONS:
        found = globals()[name] = getattr(context, name)
        return found
    if name == 'reduction':     # the standard package has it loaded at import
        import importlib        # (`from . import` would land back here)
        return importlib.import_module(__name__ + '.reduction')
    raise AttributeError('module %r has no attribute %r' % (__name__, name))


def __dir__():
    return sorted(set(globals()) | set(__all__))


SUBDEBUG = 5
SUBWARNING = 25

# spawn re-imports the main module as __mp_main__; in the main process the
# two names are one module, so pickles by either name resolve.
if '__main__' in sys.modules:
    sys.modules['__mp_main__'] = sys.modules['__main__']

# a process started by a program running on the drop-in (see _dropin)
if os.environ.get(_DROPIN_ENV_VAR) == '1':
    install()
