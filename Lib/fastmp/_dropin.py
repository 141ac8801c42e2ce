"""The drop-in switch: make `multiprocessing` and every
`multiprocessing.<sub>` resolve to fastmp, in this process and in every
process it starts.

A meta-path finder answers imports of those names with the fastmp module
of the same name, so aliasing holds for submodules imported later too.
Processes started by fork inherit the finder; spawned children and the
forkserver run child_prelude() first on their command line, before they
import or unpickle anything."""
import importlib
import importlib.abc
import importlib.machinery
import sys

_STD = 'multiprocessing'
_OURS = 'fastmp'


class _ExistingModuleLoader(importlib.abc.Loader):
    """Loads a name by handing out an already imported module."""

    def __init__(self, module):
        self._module = module

    def create_module(self, spec):
        return self._module

    def exec_module(self, module):
        pass  # already executed under its fastmp name


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Finds `multiprocessing[.sub]` as `fastmp[.sub]`.  A submodule fastmp
    lacks is not found, so importing it fails as it should."""

    def find_spec(self, fullname, path=None, target=None):
        ours = _fastmp_name(fullname)
        if ours is None:
            return None
        try:
            module = importlib.import_module(ours)
        except ModuleNotFoundError as exc:
            if exc.name == ours:
                return None
            raise
        spec = importlib.machinery.ModuleSpec(
            fullname, _ExistingModuleLoader(module),
            is_package=hasattr(module, '__path__'))
        return spec


def _fastmp_name(name):
    """'fastmp.x' for 'multiprocessing.x' (and 'fastmp' for
    'multiprocessing'); None for other names."""
    if name == _STD:
        return _OURS
    if name.startswith(_STD + '.'):
        return _OURS + name[len(_STD):]
    return None


_finder = None


def installed():
    """True once install() has run in this process."""
    return _finder is not None


def install():
    """Make `import multiprocessing` (and its submodules) give fastmp from
    now on, here and in the processes this program starts.  Modules of the
    standard package imported before are replaced in sys.modules; objects
    already taken from them stay what they are.  Idempotent."""
    global _finder
    if _finder is None:
        _finder = _AliasFinder()
        sys.meta_path.insert(0, _finder)
    for name in [n for n in sys.modules if _fastmp_name(n) is not None]:
        module = sys.modules[name]
        if getattr(module, '__name__', '').startswith(_OURS):
            continue
        del sys.modules[name]
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # a part fastmp does not have: it stays unimportable


def child_prelude():
    """Python source that re-installs the aliasing in a new interpreter,
    to put first in the `-c` program of a child ('' when not installed)."""
    if _finder is None:
        return ''
    return 'import fastmp._dropin; fastmp._dropin.install(); '
