"""The spawn start method's two halves: what the parent sends (the command
line, the preparation data) and how a fresh interpreter becomes the child
(spawn_main: read the data, re-create the parent's setting, re-import the
main module as __mp_main__, unpickle the Process object and run it)."""
import os
import sys
# pickle.load itself, without pickle.py (nor re, struct...): a spawned
# child that unpickles nothing else starts faster
from _pickle import load as _load_pickled

from . import context, process, util

__all__ = ['_main', 'freeze_support', 'set_executable', 'get_executable',
           'get_preparation_data', 'get_command_line', 'import_main_path']

WINEXE = False
WINSERVICE = False

_FORK_FLAG = '--multiprocessing-fork'

_python_exe = None


def set_executable(exe):
    """The interpreter spawn starts children with (None: unset)."""
    global _python_exe
    _python_exe = None if exe is None else os.fsencode(exe)


def get_executable():
    return _python_exe


set_executable(sys.executable)


def is_forking(argv):
    """True when argv is that of a spawned child."""
    return len(argv) >= 2 and argv[1] == _FORK_FLAG


def freeze_support():
    """In a spawned child of a frozen program, run the child and exit."""
    if not is_forking(sys.argv):
        return
    kwargs = {}
    for arg in sys.argv[2:]:
        key, value = arg.split('=')
        kwargs[key] = None if value == 'None' else int(value)
    spawn_main(**kwargs)
    sys.exit()


def get_command_line(**kwds):
    """argv that starts a child running spawn_main(**kwds), with this
    interpreter's flags (-O, -W, -X...)."""
    call_args = ', '.join('%s=%r' % item for item in kwds.items())
    if getattr(sys, 'frozen', False):
        return [sys.executable, _FORK_FLAG] + ['%s=%r' % item for item in kwds.items()]
    code = 'from fastmp.spawn import spawn_main; spawn_main(%s)' % call_args
    return ([get_executable()] + util._args_from_interpreter_flags()
            + ['-c', code, _FORK_FLAG])


def spawn_main(pipe_handle, parent_pid=None, tracker_fd=None):
    """Entry point of a spawned child: `pipe_handle` is the read end of the
    pipe carrying the preparation data and the Process object; it stays
    open (duplicated) as the parent's sentinel.  Exits with the child's
    exit code."""
    assert is_forking(sys.argv), "Not forking"
    from . import resource_tracker
    resource_tracker._resource_tracker._fd = tracker_fd
    parent_sentinel = os.dup(pipe_handle)
    sys.exit(_main(pipe_handle, parent_sentinel))


def _main(fd, parent_sentinel):
    """Read the preparation data and the Process object from `fd`, then
    run the process; return its exit code."""
    me = process.current_process()
    with os.fdopen(fd, 'rb', closefd=True) as from_parent:
        # starting a process now would mean the main module was not guarded
        me._inheriting = True
        try:
            prepare(_load_pickled(from_parent))
            process_obj = _load_pickled(from_parent)
        finally:
            del me._inheriting
    return process_obj._bootstrap(parent_sentinel)


_BOOTSTRAP_ERROR = (
    "A new process was started while this process was still being "
    "bootstrapped, i.e. while the spawn start method re-imported the main "
    "module.  Put the code that starts processes in the main module under "
    "`if __name__ == '__main__':` (with freeze_support() first if the "
    "program is frozen into an executable); see \"Safe importing of main "
    "module\" in the multiprocessing documentation.")


def _check_not_importing_main():
    if getattr(process.current_process(), '_inheriting', False):
        raise RuntimeError(_BOOTSTRAP_ERROR)


def _main_module_source():
    """('init_main_from_name', module name) when the program was started
    with -m, ('init_main_from_path', absolute file) for a script, or None
    (interactive, -c)."""
    main = sys.modules['__main__']
    spec_name = getattr(main.__spec__, 'name', None)
    if spec_name is not None:
        return 'init_main_from_name', spec_name
    path = getattr(main, '__file__', None)
    if path is None:
        return None
    if not os.path.isabs(path) and process.ORIGINAL_DIR is not None:
        path = os.path.join(process.ORIGINAL_DIR, path)
    return 'init_main_from_path', os.path.normpath(path)


def get_preparation_data(name):
    """What a spawned child needs before it can unpickle its Process object:
    name, authkey, logging set-up, sys.path/argv, directories, the start
    method, where the main module comes from and the program's root pid
    (see _names)."""
    _check_not_importing_main()
    me = process.current_process()
    data = {'log_to_stderr': util._log_to_stderr, 'authkey': me.authkey}
    if util._logger is not None:
        data['log_level'] = util._logger.getEffectiveLevel()
    # '' means "the current directory" and the child's may differ later
    path = [process.ORIGINAL_DIR if entry == '' else entry for entry in sys.path]
    # allow_none: starting a child does not fix this process's start
    # method (None leaves the child's unfixed too), as from 3.14
    from . import _names, get_start_method
    data.update(name=name, sys_path=path, sys_argv=sys.argv,
                orig_dir=process.ORIGINAL_DIR, dir=os.getcwd(),
                start_method=get_start_method(allow_none=True),
                fastmp_root_pid=_names.root_pid)
    main_source = _main_module_source()
    if main_source is not None:
        data[main_source[0]] = main_source[1]
    return data


old_main_modules = []


def prepare(data):
    """Apply preparation data (from get_preparation_data) in the child."""
    if 'fastmp_root_pid' in data:
        # first: re-importing the main module below may create named objects
        from . import _names
        _names.adopt_root_pid(data['fastmp_root_pid'])
    me = process.current_process()
    if 'name' in data:
        me.name = data['name']
    if 'authkey' in data:
        me.authkey = data['authkey']
    if data.get('log_to_stderr'):
        util.log_to_stderr()
    level = data.get('log_level')
    if level is not None:
        util.get_logger().setLevel(level)
    sys.path = data.get('sys_path', sys.path)
    sys.argv = data.get('sys_argv', sys.argv)
    if 'dir' in data:
        os.chdir(data['dir'])
    process.ORIGINAL_DIR = data.get('orig_dir', process.ORIGINAL_DIR)
    method = data.get('start_method')
    if method is not None:
        # the child starts its own children as its parent would (no need
        # to ask whether the method is available: the parent uses it, and
        # asking about forkserver, 3.14's default, imports socket)
        context._force_start_method(method)
    main_module = data.get('init_main_from_name')
    if main_module is not None:
        _fixup_main_from_name(main_module)
    elif 'init_main_from_path' in data:
        _fixup_main_from_path(data['init_main_from_path'])


def _install_main(namespace):
    """Make a module holding `namespace` both __main__ and __mp_main__ (the
    replaced __main__ is kept alive in old_main_modules)."""
    import types
    old_main_modules.append(sys.modules['__main__'])
    module = types.ModuleType('__mp_main__')
    module.__dict__.update(namespace)
    sys.modules['__main__'] = sys.modules['__mp_main__'] = module


def _fixup_main_from_name(mod_name):
    """Re-import the parent's `-m` module under the name __mp_main__ (its
    `if __name__ == '__main__'` block does not run)."""
    if mod_name == '__main__' or mod_name.endswith('.__main__'):
        return  # a package's __main__ would run the program again
    if getattr(sys.modules['__main__'].__spec__, 'name', None) == mod_name:
        return
    import runpy
    _install_main(runpy.run_module(mod_name, run_name='__mp_main__',
                                   alter_sys=True))


def _fixup_main_from_path(main_path):
    """Re-run the parent's main script under the name __mp_main__."""
    if os.path.splitext(os.path.basename(main_path))[0] == 'ipython':
        return
    if getattr(sys.modules['__main__'], '__file__', None) == main_path:
        return
    import runpy
    _install_main(runpy.run_path(main_path, run_name='__mp_main__'))


def import_main_path(main_path):
    """Make the script at `main_path` the __main__ module."""
    _fixup_main_from_path(main_path)
