"""Interpreter exit stays quiet: objects that die while the interpreter
clears the modules' globals (their finalizers and __del__ methods then run
with fastmp's module globals set to None) print nothing."""
import textwrap

from support import run_python

# The main module is kept alive by sys, as a module held by a C extension
# or a live thread is: the interpreter clears the globals of the modules
# still alive in the reverse order of their import, so fastmp's are gone
# when this module's objects die.  (torch's DataLoader leaves its workers
# and their finalizers to that moment.)
PROGRAM = textwrap.dedent("""
    import sys
    import fastmp
    from fastmp import connection, managers, shared_memory, util


    class Thing:
        pass


    def work(x):
        return x


    if __name__ == '__main__':
        sys.keep_main_module = sys.modules[__name__]
        ctx = fastmp.get_context(sys.argv[1])
        thing = Thing()
        thing.finalizer = util.Finalize(thing, print, args=('finalized',))
        shm = shared_memory.SharedMemory(create=True, size=64)
        shm.unlink()
        queue = ctx.Queue()
        queue.put([1, 2, 3])
        lock, value = ctx.Lock(), ctx.Value('i', 1)
        listener = connection.Listener(family='AF_UNIX')
        pool = ctx.Pool(1)
        pool.map(work, range(10))
        results = pool.imap(work, range(100))
        next(results)
        manager = ctx.Manager()
        shared = manager.dict(a=1)
        memory_manager = managers.SharedMemoryManager(ctx=ctx)
        memory_manager.start()
        shared_list = memory_manager.ShareableList([1, 2])
        finished = ctx.Process(target=work, args=(1,))
        finished.start()
        finished.join()
        daemon = ctx.Process(target=work, args=(1,), daemon=True)
        daemon.start()
        print('ok')
""")


def test_objects_dying_after_module_teardown_print_nothing(tmp_path, start_method):
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    done = run_python(str(script), start_method, cwd=str(tmp_path), timeout=90)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")
