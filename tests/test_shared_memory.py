"""shared_memory: SharedMemory, ShareableList, and the resource tracker's
handling of segments.

Everything up to "fastmp only" is the standard behaviour, run against
fastmp and the standard package.  The last part covers the README's
"Cleanup survives kill -9" (segment names, removal after SIGKILL of the
whole program) and fastmp and standard ShareableLists sharing a segment."""
import importlib
import os
import pickle
import signal
import sys
import textwrap

import pytest

import fastmp
from fastmp import shared_memory
from support import run_python, skip_stdlib_before, wait_for


def _module_of(impl, name):
    return importlib.import_module(impl.__name__ + "." + name)


def _module(impl):
    return _module_of(impl, "shared_memory")


def _exists(name):
    return os.path.exists("/dev/shm/" + name)


# ---- children ----------------------------------------------------------

def _attach_and_write(module_name, name_or_shm, payload):
    sm = importlib.import_module(module_name)
    shm = sm.SharedMemory(name_or_shm) if isinstance(name_or_shm, str) else name_or_shm
    shm.buf[:len(payload)] = payload
    shm.close()


def _bump_list(sl):
    sl[0] += 1
    sl[1] = "child"
    sl.shm.close()


# ---- SharedMemory ------------------------------------------------------

def test_create_attach_and_attributes(impl):
    sm = _module(impl)
    shm = sm.SharedMemory(create=True, size=700)
    try:
        assert _exists(shm.name)
        assert shm.size == 700 and len(shm.buf) == 700
        assert repr(shm) == "SharedMemory(%r, size=700)" % shm.name
        shm.buf[:3] = b"abc"
        other = sm.SharedMemory(shm.name, size=10 ** 6)   # size ignored
        assert other.size == 700 and bytes(other.buf[:3]) == b"abc"
        other.close()
        other.close()                                                # idempotent
        assert other.buf is None
    finally:
        shm.close()
        shm.unlink()
    assert not _exists(shm.name)



def test_errors_like_stdlib(impl):
    sm = _module(impl)
    with pytest.raises(ValueError):
        sm.SharedMemory(create=True, size=-1)
    with pytest.raises(ValueError):
        sm.SharedMemory(create=True, size=0)
    with pytest.raises(ValueError):
        sm.SharedMemory(create=True)
    with pytest.raises(ValueError):
        sm.SharedMemory()
    with pytest.raises(FileNotFoundError):
        sm.SharedMemory("fmp-%s-absent" % os.getpid())
    shm = sm.SharedMemory(create=True, size=16)
    try:
        with pytest.raises(FileExistsError):
            sm.SharedMemory(shm.name, create=True, size=16)
    finally:
        shm.close()
        shm.unlink()
    with pytest.raises(FileNotFoundError):
        shm.unlink()



def test_embedded_null_rejected(impl):
    # older standard packages pass the name on, cut at the NUL
    skip_stdlib_before(impl, (3, 13), "the embedded-NUL check of names")
    sm = _module(impl)
    with pytest.raises(ValueError):
        sm.SharedMemory("bad\0name")
    shm = sm.SharedMemory(create=True, size=8)
    real = shm._name
    try:
        shm._name = real + "\0x"
        with pytest.raises(ValueError):
            shm.unlink()
    finally:
        shm._name = real
        shm.close()
        shm.unlink()



def test_pickle_attaches_by_name(impl):
    sm = _module(impl)
    shm = sm.SharedMemory(create=True, size=64)
    try:
        copy = pickle.loads(pickle.dumps(shm))
        copy.buf[:4] = b"same"
        assert bytes(shm.buf[:4]) == b"same" and copy.name == shm.name
        copy.close()
    finally:
        shm.close()
        shm.unlink()



def test_segment_reaches_child(impl, ctx):
    sm = _module(impl)
    shm = sm.SharedMemory(create=True, size=32)
    try:
        for target, payload in ((shm.name, b"by name"), (shm, b"pickled")):
            p = ctx.Process(target=_attach_and_write, args=(sm.__name__, target, payload))
            p.start()
            p.join(60)
            assert p.exitcode == 0
            assert bytes(shm.buf[:len(payload)]) == payload
    finally:
        shm.close()
        shm.unlink()


# ---- the resource tracker ------------------------------------------------

def _program(body, impl=fastmp):
    return textwrap.dedent("""
        import sys
        from %s import shared_memory
    """ % impl.__name__) + textwrap.dedent(body)



def test_forgotten_segment_removed_at_exit(impl):
    out = run_python("-c", _program("""
        shm = shared_memory.SharedMemory(create=True, size=10)
        print(shm.name, flush=True)
    """, impl))
    assert out.returncode == 0, out.stderr
    name = out.stdout.strip()
    assert wait_for(lambda: not _exists(name))
    assert "leaked shared_memory" in out.stderr



def test_no_warning_when_cleaned_up(impl):
    out = run_python("-c", _program("""
        shm = shared_memory.SharedMemory(create=True, size=10)
        twin = shared_memory.SharedMemory(shm.name)
        twin.close()
        shm.close()
        shm.unlink()
        sl = shared_memory.ShareableList([1, "two"])
        sl.shm.close()
        sl.shm.unlink()
        print(shm.name)
    """, impl))
    assert out.returncode == 0
    assert out.stderr == ""
    assert not _exists(out.stdout.strip())



TRACK_PROGRAM = textwrap.dedent("""
    import sys
    from {impl}.shared_memory import SharedMemory
    role, track = sys.argv[1], sys.argv[2] == 'True'
    if role == 'creator':
        mem = SharedMemory(create=True, size=10, track=track)
        print(mem.name)
    else:
        mem = SharedMemory(sys.argv[3], track=track)
    mem.close()
""")



@pytest.mark.parametrize("track", [True, False])
def test_track_decides_whether_an_attaching_program_removes(impl, track):
    # gh-82300: a program that attaches with track=True removes the segment
    # when it ends without unlinking it; with track=False it leaves it alone
    skip_stdlib_before(impl, (3, 13), "SharedMemory(track=)")
    sm = _module(impl)
    shm = sm.SharedMemory(create=True, size=10)
    try:
        out = run_python("-c", TRACK_PROGRAM.format(impl=impl.__name__),
                         "attacher", str(track), shm.name)
        assert out.returncode == 0, out.stderr
        if track:
            assert "There appear to be 1 leaked shared_memory" in out.stderr
            assert wait_for(lambda: not _exists(shm.name))
        else:
            assert "resource_tracker" not in out.stderr
            assert _exists(shm.name)
    finally:
        shm.close()
        if _exists(shm.name):
            shm.unlink()
        else:   # gone already: only our tracker's record is left
            _module_of(impl, "resource_tracker").unregister(shm._name, "shared_memory")



def test_untracked_segment_outlives_its_creator(impl):
    skip_stdlib_before(impl, (3, 13), "SharedMemory(track=)")
    sm = _module(impl)
    out = run_python("-c", TRACK_PROGRAM.format(impl=impl.__name__),
                     "creator", "False")
    assert out.returncode == 0, out.stderr
    name = out.stdout.strip()
    try:
        assert "resource_tracker" not in out.stderr
        assert _exists(name)
    finally:
        shm = sm.SharedMemory(name, track=False)
        shm.close()
        shm.unlink()


# ---- ShareableList ---------------------------------------------------------

def test_shareable_list_api_like_stdlib(impl):
    sm = _module(impl)
    sl = sm.ShareableList(["howdy", b"HoWdY", -273.154, 100, None, True, 42])
    try:
        assert sl.format == "8s8sdqxxxxxx?xxxxxxxx?q"
        assert len(sl) == 7 and list(sl) == ["howdy", b"HoWdY", -273.154, 100, None, True, 42]
        assert sl[-2] is True and sl.index(100) == 3 and sl.count(42) == 1
        with pytest.raises(IndexError):
            sl[7]
        with pytest.raises(IndexError):
            sl[7] = 2
        sl[4] = "some"
        assert sl.format == "8s8sdq8sxxxxxxx?q" and sl[4] == "some"
        with pytest.raises(ValueError, match="exceeds available storage"):
            sl[4] = "far too many"
        sl[0] = "encodés"                         # 8 bytes of UTF-8
        with pytest.raises(ValueError, match="exceeds available storage"):
            sl[0] = "encodées"
        assert sl[0] == "encodés" and sl[1] == b"HoWdY"
        with pytest.raises(ValueError) as raised:
            sl.index("absent")
        if impl is fastmp or sys.version_info >= (3, 14):
            assert str(raised.value) == "ShareableList.index(x): x not in list"
        assert sl.shm.name in repr(sl)
        twin = sm.ShareableList(name=sl.shm.name)
        twin[-1] = 880
        assert sl[-1] == 880
        twin.shm.close()
        copy = pickle.loads(pickle.dumps(sl))
        assert list(copy) == list(sl)
        copy.shm.close()
    finally:
        sl.shm.close()
        sl.shm.unlink()
    empty = sm.ShareableList()
    try:
        assert len(empty) == 0 and empty.format == "" and empty.count(1) == 0
    finally:
        empty.shm.close()
        empty.shm.unlink()



def test_shareable_list_reaches_child(impl, ctx):
    sl = _module(impl).ShareableList([41, "parent"])
    try:
        p = ctx.Process(target=_bump_list, args=(sl,))
        p.start()
        p.join(60)
        assert p.exitcode == 0
        assert list(sl) == [42, "child"]
    finally:
        sl.shm.close()
        sl.shm.unlink()


# ==== fastmp only: README "Cleanup survives kill -9", mixed packages =======

def test_segment_names_name_the_program():
    """README "Cleanup survives kill -9": fastmp's segments are named
    fmp-<pid of the program>-<random>."""
    shm = shared_memory.SharedMemory(create=True, size=8)
    try:
        assert shm.name.startswith("fmp-%s-" % fastmp._names.root_pid)
    finally:
        shm.close()
        shm.unlink()



@pytest.mark.timeout(60)
def test_segment_removed_after_sigkill_of_tree():
    """README "Cleanup survives kill -9 of the whole program": the
    tracker, in its own session, removes the segment."""
    import subprocess
    code = _program("""
        import os, time
        shm = shared_memory.SharedMemory(create=True, size=10)
        print(shm.name, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        name = proc.stdout.readline().strip()
        assert _exists(name)
        os.killpg(proc.pid, signal.SIGKILL)       # the program and its tracker
        proc.wait(10)
        assert wait_for(lambda: not _exists(name), timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()



def test_shareable_list_interoperates_with_stdlib():
    """fastmp and standard ShareableLists share one segment (the layout is
    the standard one)."""
    from multiprocessing import resource_tracker as std_tracker, shared_memory as std
    ours = shared_memory.ShareableList([1, 2.5, "x", b"y", None, False])
    try:
        theirs = std.ShareableList(name=ours.shm.name)
        assert list(theirs) == [1, 2.5, "x", b"y", None, False]
        theirs[0] = "from std"
        assert ours[0] == "from std"
        theirs.shm.close()
        std_tracker.unregister(theirs.shm._name, "shared_memory")   # we unlink it
    finally:
        ours.shm.close()
        ours.shm.unlink()
