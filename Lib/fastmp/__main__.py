"""`python -m fastmp program.py [args]`, `python -m fastmp -m module
[args]` and `python -m fastmp -c code [args]`: run an unchanged
multiprocessing program on fastmp.

The program runs as `python program.py` (or `-m`, `-c`) would run it
(sys.argv, sys.path[0], a fresh __main__ module, exit code, traceback),
with `multiprocessing` resolving to fastmp in it and in every process it
starts."""

__all__ = []  # the command-line runner exports nothing

import os
import sys
import types

USAGE = """\
usage: python -m fastmp program.py [args...]
       python -m fastmp -m module [args...]
       python -m fastmp -c code [args...]
Runs a multiprocessing program unchanged with fastmp standing in for
multiprocessing (in the program and in every process it starts)."""


def _new_main(file, spec=None, loader=None):
    """A fresh, empty module installed as __main__ (and __mp_main__, the
    name spawned children give the main module); file None: it has no
    __file__ (code given with -c)."""
    main = types.ModuleType('__main__')
    if file is not None:
        main.__file__ = file
        main.__cached__ = None
    main.__spec__ = spec
    main.__loader__ = spec.loader if spec is not None else loader
    main.__package__ = spec.parent if spec is not None else None
    main.__builtins__ = __builtins__
    sys.modules['__main__'] = sys.modules['__mp_main__'] = main
    return main


def _script(path):
    """(code, __main__ module) for a script file; sets sys.path[0] to its
    directory as the interpreter does."""
    path = os.path.abspath(path)
    with open(path, 'rb') as source:
        code = compile(source.read(), path, 'exec', dont_inherit=True)
    sys.path[0] = os.path.dirname(os.path.realpath(path))
    from importlib.machinery import SourceFileLoader
    return code, _new_main(path, loader=SourceFileLoader('__main__', path))


def _module(name):
    """(code, __main__ module) for `-m name` (a package runs its
    __main__); sys.path[0] is the current directory, as with `python -m`."""
    import runpy
    sys.path[0] = os.getcwd()
    try:
        _, spec, code = runpy._get_module_details(name)
    except ImportError as exc:  # runpy's own error type derives from it
        sys.stderr.write('%s: %s\n' % (sys.executable, exc))
        sys.exit(1)
    sys.argv[0] = spec.origin
    return code, _new_main(spec.origin, spec=spec)


def _command(source):
    """(code, __main__ module) for `-c source`; sys.path[0] is '', as with
    `python -c`."""
    sys.path[0] = ''
    code = compile(source, '<string>', 'exec', dont_inherit=True)
    # 3.13+ gives linecache the source of -c, so tracebacks quote its lines:
    # 3.13 under the file name, later versions under the code objects
    import linecache
    register = getattr(linecache, '_register_code', None)
    if register is not None:
        keyed_by_code = hasattr(linecache, '_interactive_cache')
        register(code if keyed_by_code else '<string>', source, '<string>')
    import importlib.machinery
    return code, _new_main(None, loader=importlib.machinery.BuiltinImporter)


def _report_uncaught(exc):
    """Print a traceback that starts in the program (not in this runner),
    through sys.excepthook like the interpreter does."""
    tb = exc.__traceback__
    # the first entry is the exec() call below
    if tb is not None and tb.tb_frame.f_code is main.__code__:
        tb = tb.tb_next
    # the default hook prints exc.__traceback__, whatever tb it is given
    sys.excepthook(type(exc), exc.with_traceback(tb), tb)


def main(argv):
    if not argv or argv[0] in ('-h', '--help'):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    from fastmp import _dropin
    _dropin.install()
    if argv[0] in ('-m', '-c') and len(argv) < 2:
        print('Argument expected for the %s option' % argv[0], file=sys.stderr)
        print(USAGE, file=sys.stderr)
        return 2
    try:
        if argv[0] == '-m':
            sys.argv = argv[1:]
            code, module = _module(argv[1])
        elif argv[0] == '-c':
            sys.argv = ['-c'] + argv[2:]
            code, module = _command(argv[1])
        else:
            sys.argv = list(argv)
            code, module = _script(argv[0])
    except SyntaxError as exc:
        # as the interpreter shows it: the offending line, no traceback
        sys.excepthook(SyntaxError, exc.with_traceback(None), None)
        return 1
    except OSError as exc:
        sys.stderr.write("%s: can't open file %r: [Errno %s] %s\n" % (
            sys.executable, os.path.abspath(argv[0]), exc.errno, exc.strerror))
        return 2
    try:
        exec(code, module.__dict__)
    except (SystemExit, KeyboardInterrupt):
        raise  # the interpreter's own exit status for these
    except BaseException as exc:
        _report_uncaught(exc)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
