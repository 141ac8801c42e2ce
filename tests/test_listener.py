"""Listener and Client: address defaults and family inference, accept/close,
context managers, the authentication handshake (against the standard
package in both directions, against a legacy HMAC-MD5 peer, and with a
wrong key), the handshake helpers, and the XML-RPC wrappers."""
import hmac
import importlib
import os
import socket
import threading

import pytest

import fastmp
import fastmp.connection as fconnection
import multiprocessing.connection as sconnection
from support import skip_stdlib_before

pytestmark = pytest.mark.timeout(60)

MODULES = {"fastmp": fconnection, "stdlib": sconnection}


# ---- workers (module level: spawned children import them) ---------------

def client_says_hello(module_name, address, authkey):
    client = importlib.import_module(module_name).Client
    with client(address, authkey=authkey) as conn:
        conn.send("hello from %d" % os.getpid())
        conn.recv()                      # wait until the server has read it


# ---- helpers -------------------------------------------------------------

def accept_in_thread(listener):
    """Start accepting on `listener` in a thread; returns (thread, box):
    box holds the accepted Connection or the exception raised."""
    box = []

    def run():
        try:
            box.append(listener.accept())
        except BaseException as e:          # handed to the test
            box.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


class LegacyPeer:
    """The HMAC-MD5 handshake of Python <= 3.11, as a third party would
    write it from the protocol: a 20-byte bare challenge, a bare 16-byte
    MD5 answer."""

    def __init__(self, conn, authkey):
        self.conn, self.authkey = conn, authkey

    def deliver(self):
        message = os.urandom(20)
        self.conn.send_bytes(b"#CHALLENGE#" + message)
        answer = self.conn.recv_bytes(256)
        ok = answer == hmac.new(self.authkey, message, "md5").digest()
        self.conn.send_bytes(b"#WELCOME#" if ok else b"#FAILURE#")
        return ok

    def answer(self):
        message = self.conn.recv_bytes(256)[len(b"#CHALLENGE#"):]
        self.conn.send_bytes(hmac.new(self.authkey, message, "md5").digest())
        return self.conn.recv_bytes(256) == b"#WELCOME#"


# ---- addresses and families ------------------------------------------------

def test_public_names_match_the_standard_module():
    for name in ("families", "default_family", "BUFSIZE"):
        if hasattr(sconnection, name):
            assert getattr(fconnection, name) == getattr(sconnection, name), name
    for name in sconnection.__all__ + ["arbitrary_address", "address_type",
                                       "deliver_challenge", "answer_challenge",
                                       "Connection", "XmlListener", "XmlClient",
                                       "SocketClient", "rebuild_connection",
                                       "reduce_connection"]:
        assert hasattr(fconnection, name), name


def test_address_defaults_and_family_inference(impl):
    conn_mod = impl.connection
    with conn_mod.Listener() as l:
        assert conn_mod.address_type(l.address) == conn_mod.default_family == "AF_UNIX"
        # (the file's name changed in 3.15: listener-XXXX became sock-XXXX)
        assert os.path.dirname(l.address) == impl.util.get_temp_dir()
        path = l.address
        assert os.path.exists(path)
    assert not os.path.exists(path)      # the socket file goes with close()
    with conn_mod.Listener(family="AF_INET") as l:
        host, port = l.address
        assert port > 0
    with conn_mod.Listener(("127.0.0.1", 0)) as l:
        assert conn_mod.address_type(l.address) == "AF_INET"
    assert conn_mod.arbitrary_address("AF_INET") == ("localhost", 0)
    with pytest.raises(ValueError):
        conn_mod.arbitrary_address("AF_BOGUS")
    with pytest.raises(ValueError):
        conn_mod.address_type(b"not-abstract")
    with pytest.raises(ValueError):
        conn_mod.Listener(r"\\.\pipe\test")
    with pytest.raises(ValueError):
        conn_mod.Client(r"\\.\pipe\test")


@pytest.mark.parametrize("family", ["AF_INET", "AF_UNIX"])
def test_accept_send_close(impl, family):
    conn_mod = impl.connection
    with conn_mod.Listener(family=family) as l:
        with conn_mod.Client(l.address) as c:
            with l.accept() as d:
                c.send(1729)
                assert d.recv() == 1729
                d.send_bytes(b"back")
                assert c.poll(5) and c.recv_bytes() == b"back"
                if family == "AF_INET":
                    assert l.last_accepted[0] == "127.0.0.1"
    with pytest.raises(OSError):
        l.accept()
    l.close()                            # closing twice is fine


def test_multiple_bind_fails(impl):
    for family in impl.connection.families:
        with impl.connection.Listener(family=family) as l:
            with pytest.raises(OSError):
                impl.connection.Listener(l.address, family)


def test_abstract_unix_socket(impl):
    with impl.connection.Listener("\0fastmp-test-%d" % os.getpid()) as l:
        with impl.connection.Client(l.address) as c, l.accept() as d:
            c.send("abstract")
            assert d.recv() == "abstract"


def test_bad_authkey_type(impl):
    with pytest.raises(TypeError):
        impl.connection.Listener(authkey="text")


# ---- authentication ------------------------------------------------------------

@pytest.mark.parametrize("server,client", [("fastmp", "stdlib"), ("stdlib", "fastmp"),
                                           ("fastmp", "fastmp")])
@pytest.mark.parametrize("family", ["AF_UNIX", "AF_INET"])
def test_handshake_across_implementations(server, client, family):
    with MODULES[server].Listener(family=family, authkey=b"secret") as l:
        t, box = accept_in_thread(l)
        with MODULES[client].Client(l.address, authkey=b"secret") as c:
            t.join(30)
            d = box[0]
            assert not isinstance(d, BaseException), d
            c.send(["over", family])
            assert d.recv() == ["over", family]
            d.send("and back")
            assert c.recv() == "and back"
            d.close()


@pytest.mark.parametrize("server,client", [("fastmp", "stdlib"), ("stdlib", "fastmp"),
                                           ("fastmp", "fastmp")])
def test_wrong_authkey(server, client):
    with MODULES[server].Listener(authkey=b"right") as l:
        t, box = accept_in_thread(l)
        with pytest.raises(fastmp.AuthenticationError if client == "fastmp"
                           else sconnection.AuthenticationError):
            MODULES[client].Client(l.address, authkey=b"wrong")
        t.join(30)
        assert isinstance(box[0], (fastmp.AuthenticationError,
                                   sconnection.AuthenticationError))


def test_legacy_md5_peers_both_ways(impl):
    a, b = impl.Pipe()
    legacy = LegacyPeer(b, b"key")
    with a, b:
        t = threading.Thread(target=lambda: box.append(legacy.answer()))
        box = []
        t.start()
        impl.connection.deliver_challenge(a, b"key")
        t.join(30)
        assert box == [True]
        box.clear()
        t = threading.Thread(target=lambda: box.append(legacy.deliver()))
        t.start()
        impl.connection.answer_challenge(a, b"key")
        t.join(30)
        assert box == [True]
        legacy.authkey = b"other"
        t = threading.Thread(target=lambda: box.append(legacy.answer()))
        t.start()
        with pytest.raises(impl.AuthenticationError):
            impl.connection.deliver_challenge(a, b"key")
        t.join(30)


def test_challenge_is_prefixed_with_the_digest(impl):
    skip_stdlib_before(impl, (3, 12), "the digest-prefixed handshake")
    a, b = impl.Pipe()
    with a, b:
        t = threading.Thread(target=impl.connection.deliver_challenge, args=(a, b"k"))
        t.daemon = True
        t.start()
        challenge = b.recv_bytes()
        assert challenge.startswith(b"#CHALLENGE#{sha256}")
        assert len(challenge) == len(b"#CHALLENGE#{sha256}") + impl.connection.MESSAGE_LENGTH
        message = challenge[len(b"#CHALLENGE#"):]
        b.send_bytes(b"{sha256}" + hmac.new(b"k", message, "sha256").digest())
        assert b.recv_bytes() == b"#WELCOME#"
        t.join(30)


def test_handshake_helpers_reject_bogus_peers(impl):
    skip_stdlib_before(impl, (3, 12), "AuthenticationError for a peer that sends no challenge")
    class Fake:
        def __init__(self, replies):
            self.replies = list(replies)
            self.sent = []

        def recv_bytes(self, maxlength=None):
            return self.replies.pop(0)

        def send_bytes(self, data):
            self.sent.append(data)
    fake = Fake([b"something bogus"])
    with pytest.raises(impl.AuthenticationError):
        impl.connection.deliver_challenge(fake, b"abc")
    assert fake.sent[-1] == b"#FAILURE#"
    with pytest.raises(impl.AuthenticationError):
        impl.connection.answer_challenge(Fake([b"#CHALLENGE#", b"bogus"]), b"abc")
    with pytest.raises(impl.AuthenticationError):
        impl.connection.answer_challenge(Fake([b"no challenge here"]), b"abc")
    with pytest.raises(ValueError):
        impl.connection.deliver_challenge(Fake([]), "not bytes")
    with pytest.raises(ValueError):
        impl.connection.answer_challenge(Fake([]), "not bytes")


@pytest.mark.parametrize("algo", [None, "md5", "sha256", "sha384", "sha3_256"])
def test_create_and_verify_response(impl, algo):
    skip_stdlib_before(impl, (3, 12), "the digest-prefixed handshake")
    prefix = b"{%s}" % algo.encode() if algo else b""
    message = prefix + b"is-twenty-bytes-long"
    response = impl.connection._create_response(b"key", message)
    assert response.startswith(prefix)
    impl.connection._verify_challenge(b"key", message, response)
    with pytest.raises(impl.AuthenticationError):
        impl.connection._verify_challenge(b"other", message, response)


def test_verify_rejects_unknown_digest(impl):
    skip_stdlib_before(impl, (3, 12), "the digest-prefixed handshake")
    with pytest.raises(impl.AuthenticationError):
        impl.connection._verify_challenge(b"k", b"m" * 40, b"{sha1}" + b"x" * 20)


# ---- across processes ---------------------------------------------------------

def test_client_in_child_process(impl, ctx):
    with impl.connection.Listener(authkey=b"family") as l:
        p = ctx.Process(target=client_says_hello,
                        args=(impl.connection.__name__, l.address, b"family"))
        p.start()
        with l.accept() as d:
            assert d.recv() == "hello from %d" % p.pid
            d.send("bye")
        p.join(30)
        assert p.exitcode == 0


# ---- XML-RPC wrappers --------------------------------------------------------

def test_xml_listener_and_client(impl):
    with impl.connection.XmlListener(authkey=b"x") as l:
        t, box = accept_in_thread(l)
        c = impl.connection.XmlClient(l.address, authkey=b"x")
        t.join(30)
        d = box[0]
        c.send({"a": [1, 2.5, "three"]})
        assert d.recv() == {"a": [1, 2.5, "three"]}
        d.send(None)
        assert c.recv() is None
        assert c.poll(0) is False
        c.close()
        d.close()


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_explicit_inet6_family(impl):
    with impl.connection.Listener(("::1", 0), family="AF_INET6") as l:
        assert l.address[0] == "::1"
        with pytest.raises(ValueError):
            impl.connection.Listener(family="AF_NOT_A_FAMILY")


# ==== fastmp only: bad input ================================================

def test_client_checks_the_authkey_before_connecting():
    """Bad input: Client() with a str authkey raises TypeError before it
    connects (the standard package connects first, and to a closed port
    raises ConnectionRefusedError instead)."""
    with pytest.raises(TypeError):
        fconnection.Client(("localhost", 1), authkey="text")
