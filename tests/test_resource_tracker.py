"""fastmp.resource_tracker: what a program registers and does not
unregister is removed when it ends, by normal exit or by SIGKILL of its
whole process tree; nothing is said when it cleaned up properly; children
share their parent's tracker under every start method."""
import json
import multiprocessing.resource_tracker as std_resource_tracker
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from fastmp import _names, resource_tracker
from support import run_python, wait_for

pytestmark = pytest.mark.timeout(60)

LEAK_WARNING = 'resource_tracker: There appear to be %d leaked %s objects'

# Creates kernel objects the way later parts of fastmp will, and registers
# them.  NAMES is filled in by the test; MODE decides what happens next.
PROGRAM = textwrap.dedent('''
    import json, os, sys, time, _multiprocessing, _posixshmem
    import fastmp
    from fastmp import resource_tracker

    def make_segment(name):
        os.close(_posixshmem.shm_open('/' + name, os.O_CREAT | os.O_EXCL |
                                      os.O_RDWR, 0o600))
        resource_tracker.register('/' + name, 'shared_memory')

    def make_semaphore(name):
        sem = _multiprocessing.SemLock(1, 1, 1, '/' + name, False)
        resource_tracker.register('/' + name, 'semaphore')
        return sem

    MODE = sys.argv[1]   # the child reads it too, also after a re-import

    def child(name, report):
        make_segment(name)
        tracker = resource_tracker._resource_tracker
        with open(report, 'w') as f:
            json.dump({'pid': tracker._pid, 'alive': tracker._check_alive()},
                      f)
        if MODE == 'kill':
            time.sleep(60)

    if __name__ == '__main__':
        METHOD, REPORT, *NAMES = sys.argv[2:]
        make_segment(NAMES[0])
        sem = make_semaphore(NAMES[1])
        if METHOD != 'none':
            ctx = fastmp.get_context(METHOD)
            proc = ctx.Process(target=child, args=(NAMES[2], REPORT))
            proc.start()
            while not os.path.exists(REPORT) or not os.path.getsize(REPORT):
                time.sleep(0.01)
        print('tracker', resource_tracker._resource_tracker._pid, flush=True)
        if MODE == 'clean':
            _posixshmem.shm_unlink('/' + NAMES[0])
            resource_tracker.unregister('/' + NAMES[0], 'shared_memory')
            _multiprocessing.sem_unlink('/' + NAMES[1])
            resource_tracker.unregister('/' + NAMES[1], 'semaphore')
        if MODE == 'kill':
            time.sleep(60)
        if METHOD != 'none':
            proc.join()
''')


def _object_exists(name):
    return (os.path.exists('/dev/shm/' + name) or
            os.path.exists('/dev/shm/sem.' + name))


@pytest.fixture
def program(tmp_path):
    path = tmp_path / 'prog.py'
    path.write_text(PROGRAM)
    return str(path)


def _args(program, tmp_path, mode, method, count):
    names = [_names.fresh_name() for _ in range(count)]
    return [program, mode, method, str(tmp_path / 'report.json')] + names, names


def test_leaks_removed_at_exit_with_a_warning(program, tmp_path):
    args, names = _args(program, tmp_path, 'leak', 'none', 2)
    proc = run_python(*args)
    assert proc.returncode == 0, proc.stderr
    # the tracker shares our stderr pipe: when it is closed, it is done
    assert LEAK_WARNING % (1, 'shared_memory') in proc.stderr
    assert LEAK_WARNING % (1, 'semaphore') in proc.stderr
    assert not any(_object_exists(n) for n in names)


def test_no_warning_after_proper_cleanup(program, tmp_path):
    args, names = _args(program, tmp_path, 'clean', 'none', 2)
    proc = run_python(*args)
    assert proc.returncode == 0
    assert proc.stderr == ''
    assert not any(_object_exists(n) for n in names)


@pytest.mark.parametrize('method', ['fork', 'forkserver'])
def test_sigkill_of_the_whole_tree(program, tmp_path, method):
    args, names = _args(program, tmp_path, 'kill', method, 3)
    proc = subprocess.Popen([sys.executable] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith('tracker '), proc.stderr.read()
        tracker_pid = int(line.split()[1])
        assert all(_object_exists(n) for n in names)
        # the tracker is in a session of its own: killpg does not reach it
        assert os.getsid(tracker_pid) == tracker_pid != os.getsid(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        err = proc.stderr.read().decode()   # EOF once the tracker is done
    finally:
        proc.stdout.close()
        proc.stderr.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert wait_for(lambda: not any(_object_exists(n) for n in names))
    assert LEAK_WARNING % (2, 'shared_memory') in err
    assert LEAK_WARNING % (1, 'semaphore') in err


def test_children_share_the_tracker(program, tmp_path, start_method):
    args, names = _args(program, tmp_path, 'leak', start_method, 3)
    proc = run_python(*args)
    assert proc.returncode == 0, proc.stderr
    parent_tracker = int(proc.stdout.split()[1])
    with open(tmp_path / 'report.json') as f:
        seen = json.load(f)
    assert seen['alive']
    assert seen['pid'] in (None, parent_tracker)
    # one tracker saw both the parent's and the child's segment
    assert LEAK_WARNING % (2, 'shared_memory') in proc.stderr
    assert not any(_object_exists(n) for n in names)


def test_folder_type(tmp_path):
    folder = tmp_path / 'scratch'
    code = textwrap.dedent('''
        import os, sys
        from fastmp import resource_tracker
        os.makedirs(os.path.join(sys.argv[1], 'sub'))
        resource_tracker.register(sys.argv[1], 'folder')
    ''')
    proc = run_python('-c', code, str(folder))
    assert proc.returncode == 0
    assert LEAK_WARNING % (1, 'folder') in proc.stderr
    assert not folder.exists()


def test_restarted_after_being_killed(tmp_path):
    code = textwrap.dedent('''
        import os, signal, warnings
        from fastmp import resource_tracker
        tracker = resource_tracker._resource_tracker
        tracker.ensure_running()
        first = tracker._pid
        os.kill(first, signal.SIGKILL)
        os.waitpid(first, 0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            resource_tracker.register('x', 'dummy')
            resource_tracker.unregister('x', 'dummy')
        print(first != tracker._pid, [str(w.message) for w in caught])
    ''')
    proc = run_python('-c', code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('True ')
    assert 'resource_tracker: process died unexpectedly' in proc.stdout
    assert proc.stdout.count('process died') == 1


def test_ignores_sigint_and_sigterm():
    tracker = resource_tracker.ResourceTracker()
    tracker.ensure_running()
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            os.kill(tracker._pid, signum)
        time.sleep(0.3)
        assert tracker._check_alive()
    finally:
        tracker._stop()
    assert tracker._exitcode == 0


@pytest.mark.parametrize('unregister, exitcode', [(True, 0), (False, 1)])
def test_exit_code_tells_whether_something_leaked(unregister, exitcode):
    tracker = resource_tracker.ResourceTracker()
    tracker.register('somename', 'dummy')   # starts it
    assert tracker._check_alive() and tracker._exitcode is None
    if unregister:
        tracker.unregister('somename', 'dummy')
    tracker._stop()
    assert tracker._exitcode == exitcode


def test_name_too_long_is_refused():
    with pytest.raises(ValueError):
        resource_tracker.register('a' * 600, 'shared_memory')


def test_cleanup_funcs_table():
    funcs = resource_tracker._CLEANUP_FUNCS
    assert {'noop', 'semaphore', 'shared_memory'} <= set(funcs)
    # the standard suite walks the keys: they must be the standard ones
    assert set(funcs) - {'noop', 'semaphore', 'shared_memory', 'dummy'} == set()
    with pytest.raises(FileNotFoundError):
        funcs['shared_memory']('/' + _names.fresh_name())
    with pytest.raises(RuntimeError):
        funcs['noop']('anything')


def test_reentrant_call_is_reported(recwarn):
    tracker = resource_tracker.ResourceTracker()
    try:
        with tracker._lock:
            with pytest.raises(resource_tracker.ReentrantCallError):
                tracker.ensure_running()
            tracker.register('r', 'dummy')   # warns instead of deadlocking
        assert any('reentrantly' in str(w.message) for w in recwarn)
    finally:
        tracker._stop()


def test_tracker_does_not_hold_the_programs_descriptors():
    code = textwrap.dedent('''
        import os, select
        from fastmp import resource_tracker
        r, w = os.pipe()
        os.set_inheritable(w, True)     # as a careless program might
        resource_tracker.ensure_running()
        os.close(w)
        # EOF only once the tracker has dropped its inherited copy
        ready, _, _ = select.select([r], [], [], 20)
        print('eof' if ready and os.read(r, 1) == b'' else 'held')
    ''')
    proc = run_python('-c', code)
    assert proc.stdout.strip() == 'eof', proc.stderr


def test_works_when_fastmp_is_found_through_sys_path_only(tmp_path):
    # the helper processes must start even without PYTHONPATH pointing
    # at fastmp: the program put it on sys.path itself
    root = os.path.dirname(os.path.dirname(resource_tracker.__file__))
    name = _names.fresh_name()
    code = textwrap.dedent('''
        import os, sys
        sys.path.insert(0, %r)
        import _posixshmem
        import fastmp
        from fastmp import resource_tracker

        if __name__ == '__main__':
            os.close(_posixshmem.shm_open('/%s', os.O_CREAT | os.O_RDWR, 0o600))
            resource_tracker.register('/%s', 'shared_memory')
            p = fastmp.get_context('forkserver').Process(target=os.getpid)
            p.start()
            p.join()
            print(p.exitcode)
    ''' % (root, name, name))
    script = tmp_path / 'prog.py'
    script.write_text(code)
    proc = run_python(str(script), env={'PYTHONPATH': ''},
                      cwd=str(tmp_path))
    assert proc.stdout.strip() == '0', proc.stderr
    assert LEAK_WARNING % (1, 'shared_memory') in proc.stderr
    assert not _object_exists(name)


ODD_NAMES = (':a:b', 'ends:with:colon:', '\nstarts-with-newline',
             'multi\nline\nname', 'colons:and\nnewlines', 'non-ascii-\u00e9')


@pytest.mark.parametrize('simple_format', [True, False])
def test_any_segment_name_is_tracked(simple_format):
    # names the `cmd:name:type` line cannot carry travel as JSON lines, in
    # either setting of the switch the standard suite flips
    prefix = _names.fresh_name()
    code = textwrap.dedent('''
        import sys
        from fastmp import resource_tracker, shared_memory
        resource_tracker._resource_tracker._use_simple_format = %r
        prefix, names = sys.argv[1], sys.argv[2:]
        for name in names:
            shm = shared_memory.SharedMemory(prefix + name, create=True, size=8)
            shm.close()
            shm.unlink()
        left = shared_memory.SharedMemory(prefix + names[-2], create=True,
                                          size=8)
        left.close()
    ''' % simple_format)
    proc = run_python('-c', code, prefix, *ODD_NAMES)
    assert proc.returncode == 0, proc.stderr
    # the tracker shares our stderr pipe: when it is closed, it is done
    assert LEAK_WARNING % (1, 'shared_memory') in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not any(_object_exists(prefix + name) for name in ODD_NAMES)


@pytest.mark.skipif(not hasattr(std_resource_tracker, '_decode_message'),
                    reason='the standard tracker reads JSON lines from 3.14')
@pytest.mark.parametrize('name', ODD_NAMES)
def test_json_lines_read_by_the_standard_tracker(name):
    line = resource_tracker._json_message('REGISTER', name, 'shared_memory')
    assert len(line) <= resource_tracker._MAX_MESSAGE
    assert (std_resource_tracker._decode_message(line)
            == ('REGISTER', 'shared_memory', name))
    assert resource_tracker._decode(line) == ('REGISTER', name, 'shared_memory')


def test_malformed_json_line_is_refused():
    for line in (b'{"cmd": "REGISTER"}\n', b'{"cmd": 1, "rtype": "dummy"}\n',
                 b'{not json\n',
                 b'{"cmd": "REGISTER", "rtype": "dummy", "base64_name": "a"}\n'):
        with pytest.raises(ValueError):
            resource_tracker._decode(line)
