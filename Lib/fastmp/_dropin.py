"""The drop-in switch: make `multiprocessing` and every
`multiprocessing.<sub>` resolve to fastmp, in this process and in every
process it starts.

A meta-path finder answers imports of those names with the fastmp module
of the same name, so aliasing holds for submodules imported later too.
Processes started by fork inherit the finder.  Spawned children and the
forkserver are new interpreters: they inherit the environment variable
FASTMP_DROPIN=1, and importing fastmp (which their command line does
first, before unpickling or importing anything of the program) installs
the finder there too."""

__all__ = ['install']

import os
import sys

ENV_VAR = 'FASTMP_DROPIN'

_STD = 'multiprocessing'
_OURS = 'fastmp'


class _ExistingModuleLoader:
    """Loads a name by handing out an already imported module."""

    def __init__(self, module):
        self._module = module
        self._own_spec = module.__spec__

    def create_module(self, spec):
        return self._module

    def exec_module(self, module):
        # Already executed under its fastmp name; the import system has just
        # overwritten __spec__ with the alias's, so put the real one back.
        module.__spec__ = self._own_spec


class _AliasFinder:
    """Finds `multiprocessing[.sub]` as `fastmp[.sub]`.  A submodule fastmp
    lacks is not found, so importing it fails as it should."""

    def find_spec(self, fullname, path=None, target=None):
        ours = _fastmp_name(fullname)
        if ours is None:
            return None
        import importlib.machinery
        try:
            module = importlib.import_module(ours)
        except ModuleNotFoundError as exc:
            if exc.name == ours:
                return None
            raise
        return importlib.machinery.ModuleSpec(
            fullname, _ExistingModuleLoader(module),
            is_package=hasattr(module, '__path__'))


def _fastmp_name(name):
    """'fastmp.x' for 'multiprocessing.x' (and 'fastmp' for
    'multiprocessing'); None for other names."""
    if name == _STD:
        return _OURS
    if name.startswith(_STD + '.'):
        return _OURS + name[len(_STD):]
    return None


_finder = None


def install():
    """Make `import multiprocessing` (and its submodules) give fastmp from
    now on, here and in the processes this program starts.  Modules of the
    standard package imported before are replaced in sys.modules; objects
    already taken from them stay what they are.  Idempotent."""
    global _finder
    os.environ[ENV_VAR] = '1'
    if _finder is None:
        _finder = _AliasFinder()
        sys.meta_path.insert(0, _finder)
    import importlib  # here, not at the top: spawned children start faster
    for name in [n for n in sys.modules if _fastmp_name(n) is not None]:
        module = sys.modules[name]
        if getattr(module, '__name__', '').startswith(_OURS):
            continue
        del sys.modules[name]
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # a part fastmp does not have: it stays unimportable

