"""The forkserver start method: children run and report exit codes, the
server preloads modules (and the main module), children reuse the server,
the server comes back after being killed, and it serves only clients that
know its secret.  Each scenario runs in a fresh interpreter so that it has
a fork server of its own."""
import hmac
import importlib
import os
import socket
import sys
import textwrap
import threading
import time

import pytest

import fastmp
from fastmp import forkserver
from support import run_python, skip_stdlib_before

pytestmark = pytest.mark.timeout(90)

# where fastmp is imported from, for programs run in another directory
FASTMP_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastmp.__file__)))


def run_program(tmp_path, source, *args):
    """Run `source` as a script (its directory on sys.path); return the
    CompletedProcess, failing the test on a non-zero exit."""
    path = tmp_path / 'prog.py'
    path.write_text(textwrap.dedent(source))
    proc = run_python(str(path), *args, cwd=str(tmp_path),
                      env={'PYTHONPATH': FASTMP_ROOT})
    assert proc.returncode == 0, proc.stderr
    return proc


def test_children_run_and_report_exit_codes(tmp_path):
    out = run_program(tmp_path, '''
        import os, sys
        import fastmp

        def work(path, n):
            with open(path, 'a') as f:
                f.write('%d %d\\n' % (n, os.getppid()))
            sys.exit(n)

        if __name__ == '__main__':
            ctx = fastmp.get_context('forkserver')
            procs = [ctx.Process(target=work, args=(sys.argv[1], n))
                     for n in range(4)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            from fastmp.forkserver import _forkserver
            print([p.exitcode for p in procs], _forkserver._forkserver_pid)
            killed = ctx.Process(target=__import__('time').sleep, args=(30,))
            killed.start()
            killed.kill()
            killed.join()
            print(killed.exitcode)
    ''', str(tmp_path / 'log')).stdout.split('\n')
    codes, server_pid = out[0].rsplit(' ', 1)
    assert codes == '[0, 1, 2, 3]'
    assert out[1] == '-9'
    lines = (tmp_path / 'log').read_text().split('\n')[:-1]
    assert sorted(int(line.split()[0]) for line in lines) == [0, 1, 2, 3]
    # the server, not the program, is every child's parent
    assert {line.split()[1] for line in lines} == {server_pid}


PRELOADED = '''
import os
IMPORTED_IN = os.getpid()
'''


def test_preload_modules_and_main(tmp_path):
    (tmp_path / 'heavy_module.py').write_text(PRELOADED)
    out = run_program(tmp_path, '''
        import os, sys
        import fastmp
        MAIN_IMPORTED_IN = os.getpid()

        def where():
            import heavy_module
            print(heavy_module.IMPORTED_IN, MAIN_IMPORTED_IN, os.getpid(),
                  os.getppid(), flush=True)

        if __name__ == '__main__':
            fastmp.set_forkserver_preload(['__main__', 'heavy_module',
                                           'no_such_module_xyz'])
            ctx = fastmp.get_context('forkserver')
            p = ctx.Process(target=where)
            p.start()
            p.join()
            print('parent', os.getpid())
    ''').stdout.split()
    module_pid, main_pid, child_pid, server_pid, _, parent_pid = out
    # both were imported once, in the server, before it forked the child
    assert module_pid == main_pid == server_pid
    assert len({server_pid, child_pid, parent_pid}) == 3


def test_grandchildren_reuse_the_server(tmp_path):
    out = run_program(tmp_path, '''
        import os
        import fastmp

        def leaf():
            pass

        def middle():
            from fastmp.forkserver import _forkserver
            p = fastmp.Process(target=leaf)
            p.start()
            p.join()
            assert p.exitcode == 0
            # no server of its own: it used the one it was started by
            print('middle', _forkserver._forkserver_pid,
                  _forkserver._forkserver_address, os.getppid(), flush=True)

        if __name__ == '__main__':
            fastmp.set_start_method('forkserver')
            from fastmp.forkserver import _forkserver
            p = fastmp.Process(target=middle)
            p.start()
            p.join()
            print('top', _forkserver._forkserver_pid,
                  _forkserver._forkserver_address, p.exitcode)
    ''').stdout.split('\n')
    middle = out[0].split()
    top = out[1].split()
    assert middle[1] == 'None' and middle[2] == top[2]
    assert middle[3] == top[1] and top[3] == '0'


def test_server_restarts_after_being_killed(tmp_path):
    out = run_program(tmp_path, '''
        import os, signal, time
        import fastmp
        from fastmp.forkserver import _forkserver

        if __name__ == '__main__':
            ctx = fastmp.get_context('forkserver')
            results = []
            for signum in (signal.SIGKILL, signal.SIGTERM):
                p = ctx.Process(target=time.sleep, args=(0,))
                p.start()
                p.join()
                old = _forkserver._forkserver_pid
                os.kill(old, signum)
                time.sleep(0.2)
                p = ctx.Process(target=time.sleep, args=(0,))
                p.start()
                p.join()
                results.append((p.exitcode, _forkserver._forkserver_pid != old))
            print(results)
    ''').stdout
    assert out.strip() == '[(0, True), (0, True)]'


def test_a_client_without_the_key_is_refused(tmp_path):
    # one that skips the handshake and sends descriptors straight away gets
    # the challenge, then b'#FAILURE#' and the connection closed; no child
    out = run_program(tmp_path, '''
        import array, os, socket
        import fastmp
        from fastmp.forkserver import _forkserver

        if __name__ == '__main__':
            ctx = fastmp.get_context('forkserver')
            _forkserver.ensure_running()
            status_r, status_w = os.pipe()
            heard = b''
            with socket.socket(socket.AF_UNIX) as intruder:
                intruder.connect(_forkserver._forkserver_address)
                intruder.sendall(b'\\0' * 33)
                # no acknowledgement comes back: send without waiting for it
                fds = array.array('i', [status_r, status_w])
                intruder.sendmsg([b'\\2'], [(socket.SOL_SOCKET,
                                             socket.SCM_RIGHTS, fds)])
                intruder.settimeout(10)
                try:
                    while True:
                        chunk = intruder.recv(4096)
                        if not chunk:
                            break
                        heard += chunk
                except ConnectionResetError:   # it closed with data unread
                    pass
            os.close(status_w)
            no_pid = os.read(status_r, 8) == b''
            p = ctx.Process(target=os.getpid)
            p.start()
            p.join()
            mode = oct(os.stat(_forkserver._forkserver_address).st_mode & 0o777)
            print(heard[4:15], heard[-9:], no_pid, p.exitcode, mode)
    ''').stdout
    assert out.split() == ["b'#CHALLENGE#'", "b'#FAILURE#'", 'True', '0',
                           '0o600']


def _forkserver_module(impl):
    return importlib.import_module(impl.__name__ + '.forkserver')


def test_the_key_is_checked_both_ways(impl):
    # a connection.Client that knows the key passes the handshake; a
    # process started with a wrong key fails with AuthenticationError
    skip_stdlib_before(impl, (3, 14), 'an authenticating forkserver')
    server = _forkserver_module(impl)._forkserver
    server.ensure_running()
    key = server._forkserver_authkey
    assert len(key) >= 16
    connection = importlib.import_module(impl.__name__ + '.connection')
    connection.Client(server._forkserver_address, authkey=key).close()
    with pytest.raises(impl.AuthenticationError):
        connection.Client(server._forkserver_address, authkey=b'x' * len(key))
    ctx = impl.get_context('forkserver')
    server._forkserver_authkey = b'T' * len(key)
    try:
        p = ctx.Process(target=os.getpid)
        with pytest.raises(impl.AuthenticationError):
            p.start()
    finally:
        server._forkserver_authkey = key
    p = ctx.Process(target=os.getpid)
    p.start()
    p.join(30)
    assert p.exitcode == 0


def test_a_server_without_the_key_gets_nothing():
    # the client checks the server's answer before it sends descriptors
    ours, theirs = socket.socketpair()
    with ours, theirs:
        def impostor():
            challenge = forkserver._CHALLENGE + forkserver._new_challenge()
            impostor_side.send(challenge)
            impostor_side.recv()                       # the client's answer
            nonce = impostor_side.recv()[len(forkserver._CHALLENGE):]
            impostor_side.send(forkserver._WELCOME,
                               forkserver._answer(b'wrong', nonce))
        impostor_side = forkserver._ControlChannel(theirs, time.monotonic() + 30)
        thread = threading.Thread(target=impostor)
        thread.start()
        try:
            with pytest.raises(fastmp.AuthenticationError):
                forkserver._authenticate_server(forkserver._ControlChannel(ours),
                                                b'right')
        finally:
            thread.join(30)
        # the client's last word is b'#FAILURE#', and nothing follows
        assert impostor_side.recv() == forkserver._FAILURE
        ours.close()
        assert theirs.recv(1) == b''


@pytest.mark.parametrize('key_length', [0, 1, 32, 64, 65, 200])
def test_hmac_sha256_is_the_standard_one(key_length):
    key = os.urandom(key_length)
    message = forkserver._new_challenge()
    assert (forkserver._hmac_sha256(key, message)
            == hmac.new(key, message, 'sha256').digest())


def test_the_server_does_not_load_openssl(tmp_path):
    # its handshake uses the interpreter's own SHA-256: OpenSSL mapped into
    # the server would make each of its forks dearer
    out = run_program(tmp_path, '''
        import sys
        import fastmp

        def loaded():
            print(sorted({'hmac', '_hashlib', 'ssl'} & set(sys.modules)))

        if __name__ == '__main__':
            p = fastmp.get_context('forkserver').Process(target=loaded)
            p.start()
            p.join()
    ''').stdout
    assert out.strip() == '[]'


def test_preload_names_must_be_strings():
    with pytest.raises(TypeError, match='module_names must be a list of '
                                        'strings'):
        fastmp.get_context('forkserver').set_forkserver_preload([1, 2])


def _needs_on_error(impl):
    skip_stdlib_before(impl, (3, 15), 'set_forkserver_preload(on_error=)')


def test_preload_on_error_must_be_a_policy(impl):
    _needs_on_error(impl)
    with pytest.raises(ValueError, match="on_error must be 'ignore', 'warn', "
                                         "or 'fail'"):
        impl.get_context('forkserver').set_forkserver_preload(
            ['os'], on_error='loud')


PRELOAD_POLICY = '''
    import sys
    import {impl} as mp

    def send(conn):
        conn.send(42)

    if __name__ == '__main__':
        ctx = mp.get_context('forkserver')
        ctx.set_forkserver_preload(['__main__', 'no_such_module_xyz'],
                                   on_error=sys.argv[1])
        ours, theirs = ctx.Pipe()
        p = ctx.Process(target=send, args=(theirs,))
        try:
            p.start()
        except (EOFError, ConnectionError) as exc:
            print('failed', getattr(exc, '__notes__', []))
        else:
            print('got', ours.recv())
            p.join()
'''


@pytest.mark.parametrize('on_error', ['ignore', 'warn', 'fail'])
def test_preload_failure_follows_on_error(impl, tmp_path, on_error):
    # 'ignore' says nothing, 'warn' writes an ImportWarning to the server's
    # stderr (ours), 'fail' ends the server: start() fails with a note
    _needs_on_error(impl)
    path = tmp_path / 'prog.py'
    path.write_text(textwrap.dedent(PRELOAD_POLICY.format(impl=impl.__name__)))
    proc = run_python('-W', 'always::ImportWarning', str(path), on_error,
                      cwd=str(tmp_path), env={'PYTHONPATH': FASTMP_ROOT})
    assert proc.returncode == 0, proc.stderr
    if on_error == 'fail':
        assert proc.stdout.startswith('failed [')
        assert 'Forkserver process may have crashed' in proc.stdout
        assert 'ModuleNotFoundError' in proc.stderr
    else:
        assert proc.stdout.strip() == 'got 42'
        warned = ('ImportWarning' in proc.stderr
                  and 'no_such_module_xyz' in proc.stderr)
        assert warned == (on_error == 'warn'), proc.stderr


def test_preloaded_main_sees_the_programs_argv(impl, tmp_path):
    # gh-143706: sys.argv is the program's while the server imports __main__
    skip_stdlib_before(impl, (3, 14), "the program's sys.argv in the forkserver")
    path = tmp_path / 'prog.py'
    path.write_text(textwrap.dedent('''
        import os, sys
        import {impl} as mp
        print('import', sys.argv[1], len(sys.argv), flush=True)

        def show():
            print('child', sys.argv[1], len(sys.argv), flush=True)

        if __name__ == '__main__':
            ctx = mp.get_context('forkserver')
            ctx.set_forkserver_preload(['__main__'])
            p = ctx.Process(target=show)
            p.start()
            p.join()
    '''.format(impl=impl.__name__)))
    # (in all longer than the system's limit on one argument)
    proc = run_python(str(path), 'foo', *['x' * 60] * 4000,
                      cwd=str(tmp_path), env={'PYTHONPATH': FASTMP_ROOT})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ['import foo 4002'] * 2 + ['child foo 4002']


def test_too_many_fds_are_refused():
    with pytest.raises(ValueError):
        forkserver.connect_to_new_process(list(range(forkserver.MAXFDS_TO_SEND)))


def test_signed_numbers_roundtrip():
    r, w = os.pipe()
    try:
        for n in (0, -9, 2 ** 40):
            forkserver.write_signed(w, n)
            assert forkserver.read_signed(r) == n
        os.close(w)
        w = None
        with pytest.raises(EOFError):
            forkserver.read_signed(r)
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


def child_sends_pid(sock):
    sock.sendall(str(os.getpid()).encode())
    sock.close()


def test_in_process_forkserver_child():
    # the test process's own server (shared by the whole test run)
    fctx = fastmp.get_context('forkserver')
    ours, theirs = socket.socketpair()
    with ours, theirs:
        p = fctx.Process(target=child_sends_pid, args=(theirs,))
        p.start()
        ours.settimeout(30)
        assert int(ours.recv(20)) == p.pid
        p.join(30)
    assert p.exitcode == 0


def test_install_after_the_server_started(tmp_path):
    # the server predates fastmp.install(); children started afterwards
    # must still see multiprocessing as fastmp
    out = run_program(tmp_path, '''
        import fastmp

        def which(conn):
            import multiprocessing
            conn.send(multiprocessing.__name__)

        if __name__ == '__main__':
            ctx = fastmp.get_context('forkserver')
            for step in ('before', 'after'):
                if step == 'after':
                    fastmp.install()
                ours, theirs = ctx.Pipe()
                p = ctx.Process(target=which, args=(theirs,))
                p.start()
                print(step, ours.recv())
                p.join()
    ''').stdout.splitlines()
    assert out[:2] == ['before multiprocessing', 'after fastmp']
