"""fastmp leaves os.environ as the program made it (test runners flag any
change): creating its objects sets nothing, in the program nor in its
children, under every start method.  The program's root pid, which the
names of its kernel objects carry, still reaches every child by other
means (see fastmp._names)."""
import json
import textwrap

from support import run_python

# Run as a program of its own, so that its pid is the root pid its children
# must use.  NAMED_AT_IMPORT is made when the main module is imported: in a
# spawned child on re-import, in the forkserver when it preloads it.
PROGRAM = textwrap.dedent("""
    import json, os, sys
    ENVIRON_BEFORE_FASTMP = dict(os.environ)
    import fastmp
    from fastmp import _names, shared_memory

    NAMED_AT_IMPORT = _names.fresh_name()


    def make_objects():
        objects = [fastmp.Lock(), fastmp.RLock(), fastmp.Semaphore(2),
                   fastmp.Queue(), fastmp.SimpleQueue(), fastmp.Value('i', 1),
                   fastmp.Array('d', 3), fastmp.Event()]
        shm = shared_memory.SharedMemory(create=True, size=64)
        name = shm.name
        shm.close()
        shm.unlink()
        for queue in objects[3:4]:
            queue.close()
            queue.join_thread()
        return name


    def report(_=None):
        # what a child sees: its environment (before and after making
        # objects), and the names made in it
        before = dict(os.environ)
        name = make_objects()
        return {'environ': before, 'unchanged': dict(os.environ) == before,
                'names': [name, NAMED_AT_IMPORT]}


    def child(conn, nested):
        result = report()
        if nested:
            # a grandchild, started by this child with the same method
            r, w = fastmp.Pipe(False)
            p = fastmp.Process(target=child, args=(w, False))
            p.start()
            w.close()
            result['grandchild'] = r.recv()
            p.join()
        conn.send(result)


    if __name__ == '__main__':
        fastmp.set_start_method(sys.argv[1])
        make_objects()
        with fastmp.Pool(1) as pool:
            from_worker = pool.apply(report)
        with fastmp.Manager() as manager:
            manager.dict(a=1)
            manager.Lock()
            manager.Queue().put(1)
        r, w = fastmp.Pipe(False)
        p = fastmp.Process(target=child, args=(w, True))
        p.start()
        w.close()
        from_child = r.recv()
        p.join()
        print(json.dumps({'pid': os.getpid(),
                          'unchanged': dict(os.environ) == ENVIRON_BEFORE_FASTMP,
                          'environ': ENVIRON_BEFORE_FASTMP, 'names': [NAMED_AT_IMPORT],
                          'worker': from_worker, 'child': from_child}))
""")


def test_objects_leave_the_environment_alone(tmp_path, start_method):
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    done = run_python(str(script), start_method, cwd=str(tmp_path), timeout=90)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    tag = "fmp-%d-" % found["pid"]
    parent_env = found["environ"]
    assert found["unchanged"]
    reports = {"program": found, "pool worker": found["worker"],
               "child": found["child"], "grandchild": found["child"]["grandchild"]}
    for who, seen in reports.items():
        assert seen["unchanged"], who
        # a child starts with the program's environment, and nothing more
        assert seen["environ"] == parent_env, who
        assert [name.startswith(tag) for name in seen["names"]] == [True] * len(
            seen["names"]), (who, seen["names"], tag)
