"""The connection agent's protocol without SSH: framing, streamed input and output, errors coming
back as the same class, several clients, idle exit. The server side runs in this process on a fake
site (`FakeOps`); the client is the real `AgentTransport`."""

from __future__ import annotations

import hashlib
import io
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from aifactory_cli.errors import EXIT_REMOTE, AuthError, ConfigError, HostKeyError, RemoteError
from aifactory_cli.transport import Stdin
from aifactory_cli.transport.agent.client import AgentTransport, make_transport
from aifactory_cli.transport.agent.launch import agent_socket_path
from aifactory_cli.transport.agent.protocol import (
    CHUNK,
    DATA,
    END,
    JSON,
    FrameConn,
    PeerGone,
    ProtocolError,
    error_from_json,
    error_to_json,
    peer_uid,
)
from aifactory_cli.transport.agent.server import AgentServer
from aifactory_cli.transport.ssh.settings import SshSettings

MB = 1024 * 1024
SETTINGS = SshSettings(host="fake.invalid", user="alice")


# --- a fake site ---------------------------------------------------------------------------------------


class _Sink(io.RawIOBase):
    """The remote command's stdin: counts bytes; stops reading after `limit` (like `head -c`)."""

    def __init__(self, ops: FakeOps, limit: int | None) -> None:
        self.ops = ops
        self.limit = limit
        self.data = bytearray()
        self.count = 0
        self.broken = False
        self.discard = False

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        n = len(memoryview(b))
        if self.discard:
            return n
        if self.limit is not None and self.count >= self.limit:
            self.broken = True
            raise BrokenPipeError("the command stopped reading")
        self.count += n
        self.ops.received += n
        if len(self.data) < 1024:
            self.data += bytes(b)[:1024]
        return n


class FakeOps:
    """Commands: `echo RC OUT ERR`, `count` (bytes on stdin),
    `head N` (reads N bytes of stdin then stops reading), `hang-up` (fails as a failed reconnect
    unless `can_reconnect`)."""

    def __init__(self) -> None:
        self.connected = False
        self.opened_total = 0
        self._tls = threading.local()
        self.received = 0
        self.runs = 0
        self.files: dict[str, bytes] = {}
        self.is_broken = False
        self.can_reconnect = False
        self.error: Exception | None = None
        self.aborted = 0
        self.noise = 0  # bytes of login-shell output cut off before each command's output
        self.lock = threading.Lock()

    def _login(self) -> None:
        with self.lock:
            if not self.connected:
                self.connected = True
                self.opened_total += 1
                self._tls.opened = getattr(self._tls, "opened", 0) + 1

    def info(self) -> dict[str, Any]:
        return {"username": "alice", "connected": self.connected}

    def connect(self) -> None:
        self._login()

    def run(self, line: str, stdin: Stdin, timeout: float | None) -> tuple[int, bytes, bytes, int]:
        if line == "hang-up" and not self.can_reconnect:
            self.connected = False
            self.is_broken = True
            raise RemoteError("lost the connection to fake:22 and could not reconnect (3 tries): refused", "vpn?")
        self._login()
        if self.error is not None:
            raise self.error
        self.runs += 1
        word, *args = shlex.split(line)
        sink = _Sink(self, int(args[0]) if word == "head" else None)
        if stdin is not None:  # as SshTransport._feed_stdin
            writer = io.BufferedWriter(sink, buffer_size=256 * 1024)
            try:
                if callable(stdin):
                    stdin(writer)
                else:
                    writer.write(stdin)
                writer.flush()
            except BrokenPipeError:
                if not sink.broken:
                    raise
            except Exception:
                self.aborted += 1
                raise
            finally:
                sink.discard = True
                writer.close()
        if word == "count":
            return 0, str(sink.count).encode(), b"", self.noise
        if word == "head":
            return 0, bytes(sink.data[: int(args[0])]), b"", self.noise
        if word == "echo":
            rc, out, err = args
            return int(rc), out.encode(), err.encode(), self.noise
        return 127, b"", f"{word}: command not found\n".encode(), self.noise

    def open_read(self, path: str, offset: int) -> Any:
        self._login()
        if path not in self.files:
            raise FileNotFoundError(2, "no such file on fake", path)
        data = self.files[path][offset:]

        class Stream:
            def __iter__(self) -> Iterator[bytes]:
                for i in range(0, len(data), 100_000):
                    if path.endswith(".bad") and i > 0:
                        raise RemoteError(f"cannot read {path} on fake: Server connection dropped", where="fake")
                    yield data[i : i + 100_000]

            def close(self) -> None:
                pass

        return Stream()

    def stream(self, line: str, sink: Callable[[bytes], object], stdin: bytes | None) -> tuple[int, bytes]:
        """Only tar lines (`cd W && tar ... -T -`, the names on stdin): the named files' bytes, one
        after another."""
        self._login()
        workdir = shlex.split(line.split("||")[0].split("&&")[0])[-1]  # `cd [--] W && ...` or `cd -- W || exit 1; ...`
        files = [n.decode() for n in (stdin or b"").split(b"\0") if n]
        if workdir == "missing":
            return 1, b"bash: cd: missing: No such file"
        for name in files:
            if name == "nope":
                return 2, b"tar: nope: Cannot stat"
            sink(self.files.get(name, b""))
        return 0, b""

    def take_opened(self) -> int:
        n = int(getattr(self._tls, "opened", 0))
        self._tls.opened = 0
        return n

    def broken(self) -> bool:
        return self.is_broken

    def close(self) -> None:
        pass


@contextmanager
def serving(ops: FakeOps, path: Path, persist: float = 60.0) -> Iterator[AgentServer]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    server = AgentServer(ops, path, persist, site="fake")
    server.bind()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop("test over")
        thread.join(10)
        assert not thread.is_alive()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AIFACTORY_HOME", str(tmp_path / "h"))
    empty = tmp_path / "ssh_config"
    empty.write_text("")
    monkeypatch.setenv("AIFACTORY_SSH_CONFIG", str(empty))

    def no_spawn(self: AgentTransport) -> None:
        raise AssertionError("the test tried to start a real agent")

    monkeypatch.setattr(AgentTransport, "_spawn", no_spawn)
    return tmp_path


@pytest.fixture
def sock_path(home: Path) -> Path:
    return agent_socket_path(SETTINGS, "fake")


@pytest.fixture
def ops() -> FakeOps:
    return FakeOps()


@pytest.fixture
def agent(ops: FakeOps, sock_path: Path) -> Iterator[AgentServer]:
    with serving(ops, sock_path) as server:
        yield server


def client(path: Path, persist: float = 60.0) -> AgentTransport:
    return AgentTransport(SETTINGS, site="fake", interactive=False, persist=persist, socket_path=path)


# --- framing --------------------------------------------------------------------------------------------


def test_frames_round_trip_and_data_is_chunked() -> None:
    a, b = socket.socketpair()
    left, right = FrameConn(a), FrameConn(b)
    payload = os.urandom(3 * CHUNK + 17)
    sizes: list[int] = []

    def send() -> None:
        left.send_json({"op": "x", "ü": [1, None]})
        left.send_data(payload)
        left.send_data(b"")

    t = threading.Thread(target=send)
    t.start()
    assert right.recv_json() == {"op": "x", "ü": [1, None]}
    got = bytearray()

    def sink(chunk: bytes) -> None:
        sizes.append(len(chunk))
        got.extend(chunk)

    right.recv_stream(sink)
    assert bytes(got) == payload
    assert max(sizes) <= CHUNK and len(sizes) == 4
    assert right.recv_bytes() == b""
    t.join()
    assert not right.readable_now()
    left.close()
    assert right.readable_now()  # EOF is readable
    with pytest.raises(PeerGone):
        right.recv_frame()


def test_bad_frames() -> None:
    a, b = socket.socketpair()
    right = FrameConn(b)
    a.sendall(b"Z\x00\x00\x00\x01x")
    with pytest.raises(ProtocolError):
        right.recv_frame()
    a2, b2 = socket.socketpair()
    a2.sendall(bytes([JSON]) + (1 << 30).to_bytes(4, "big"))
    with pytest.raises(ProtocolError):
        FrameConn(b2).recv_frame()
    a3, b3 = socket.socketpair()
    a3.sendall(bytes([DATA, 0, 0, 0, 1, 65]))
    with pytest.raises(ProtocolError):
        FrameConn(b3).recv_json()
    a4, b4 = socket.socketpair()
    a4.sendall(bytes([JSON, 0, 0, 0, 2]) + b"[]")
    with pytest.raises(ProtocolError):
        FrameConn(b4).recv_json()
    a5, b5 = socket.socketpair()
    a5.sendall(bytes([JSON, 0, 0, 0, 9]) + b"{")  # cut short
    a5.close()
    with pytest.raises(PeerGone):
        FrameConn(b5).recv_frame()
    for s in (a, b, a2, b2, a3, b3, a4, b4, b5):
        s.close()


def test_peer_uid_is_ours() -> None:
    a, b = socket.socketpair()
    uid = peer_uid(a)
    assert uid is None or uid == os.getuid()
    a.close()
    b.close()


# --- errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [RemoteError, HostKeyError, AuthError, ConfigError])
def test_error_round_trip(cls: type[RemoteError]) -> None:
    exc = cls("the host key of x:22 has CHANGED", "do not connect", where="lumi")
    exc.queued = "no"
    back = error_from_json(error_to_json(exc))
    assert type(back) is cls
    assert isinstance(back, cls)
    assert (back.message, back.hint, back.where, back.exit_code) == (exc.message, exc.hint, "lumi", exc.exit_code)
    assert str(back) == str(exc)
    assert back.queued == "no"


def test_error_round_trip_other_kinds() -> None:
    missing = error_from_json(error_to_json(FileNotFoundError(2, "no such file on lumi", "x/y.log")))
    assert isinstance(missing, FileNotFoundError)
    assert (missing.errno, missing.strerror, missing.filename) == (2, "no such file on lumi", "x/y.log")

    class SubRemote(AuthError):  # not in aifactory_cli.errors: the nearest known base
        pass

    back = error_from_json(error_to_json(SubRemote("m", "h")))
    assert type(back) is AuthError and back.message == "m"
    other = error_from_json(error_to_json(ValueError("boom")), "lumi", Path("/x.log"))
    assert type(other) is RemoteError
    assert "ValueError: boom" in other.message and "/x.log" in (other.hint or "") and other.where == "lumi"
    assert other.exit_code == EXIT_REMOTE


# --- requests through a server on the fake site --------------------------------------------------------


def test_hello_run_and_counters(agent: AgentServer, ops: FakeOps, sock_path: Path) -> None:
    assert oct(sock_path.stat().st_mode & 0o777) == "0o600"
    assert oct(sock_path.parent.stat().st_mode & 0o777) == "0o700"
    with client(sock_path) as tr:
        assert tr.username == "alice"
        assert tr.agent_pid == os.getpid()
        tr.connect()
        assert tr.connections_opened == 1  # this client made the fake log in
        r = tr.run(["echo", "3", "out ü\n", "err\n"])
        assert (r.rc, r.stdout, r.stderr, r.noise_bytes) == (3, "out ü\n", "err\n", 0)
        ops.noise = 57  # a noisy login shell on the site: the count reaches the client
        assert tr.run("echo 0 x y").noise_bytes == 57
        ops.noise = 0
        r = tr.run("nothing-here")
        assert (r.rc, r.stderr) == (127, "nothing-here: command not found\n")
        assert tr.commands_run == 3
    with client(sock_path) as other:
        assert other.run("echo 0 x y").stdout == "x"
        assert other.connections_opened == 0  # reused the login


def test_streamed_stdin_is_not_buffered(agent: AgentServer, ops: FakeOps, sock_path: Path) -> None:
    total = 60 * MB
    lag: list[int] = []

    def writer(sink: BinaryIO) -> None:
        block = b"z" * MB
        for i in range(total // MB):
            sink.write(block)
            lag.append((i + 1) * MB - ops.received)  # written here but not yet at the "remote"

    with client(sock_path) as tr:
        r = tr.run("count", stdin=writer)
    assert (r.rc, r.stdout) == (0, str(total))
    # socket buffers + one CHUNK per side: a few MB at most, never the whole stream
    assert max(lag) < 8 * MB, max(lag)


def test_stdin_bytes_and_empty(agent: AgentServer, sock_path: Path) -> None:
    with client(sock_path) as tr:
        assert tr.run("count", stdin=b"abc" * 100_000).stdout == "300000"
        assert tr.run("count", stdin=b"").stdout == "0"


def test_command_that_stops_reading_stops_the_writer(agent: AgentServer, ops: FakeOps, sock_path: Path) -> None:
    written = [0]
    seen: list[BaseException] = []

    def writer(sink: BinaryIO) -> None:
        try:
            for _ in range(200):
                sink.write(b"y" * MB)
                written[0] += MB
        except BrokenPipeError as exc:
            seen.append(exc)
            raise

    with client(sock_path) as tr:
        r = tr.run("head 5", stdin=writer)
        assert (r.rc, r.stdout) == (0, "yyyyy")
        assert seen and written[0] < 50 * MB  # told to stop long before the end
        assert tr.run("echo 0 again x").stdout == "again"  # the connection is still in step


def test_local_writer_error_is_raised_and_the_connection_survives(
    agent: AgentServer, ops: FakeOps, sock_path: Path
) -> None:
    def writer(sink: BinaryIO) -> None:
        sink.write(b"abc" * MB)
        raise OSError("local file vanished")

    with client(sock_path) as tr:
        with pytest.raises(OSError, match="vanished"):
            tr.run("count", stdin=writer)
        assert ops.aborted == 1  # the remote side was stopped too
        assert tr.run("echo 0 ok x").stdout == "ok"
        assert len(tr._pool) == 1


def test_remote_errors_come_back_as_the_same_class(agent: AgentServer, ops: FakeOps, sock_path: Path) -> None:
    ops.error = HostKeyError("the host key of fake:22 is not known", "ssh-keyscan ...", where="fake")
    with client(sock_path) as tr:
        with pytest.raises(HostKeyError) as info:
            tr.run("true", stdin=b"never sent")
        assert info.value.message == "the host key of fake:22 is not known"
        assert info.value.hint == "ssh-keyscan ..." and info.value.where == "fake"
        assert info.value.exit_code == EXIT_REMOTE
        ops.error = None
        assert tr.run("count", stdin=b"12").stdout == "2"


def test_files(agent: AgentServer, ops: FakeOps, sock_path: Path) -> None:
    data = os.urandom(CHUNK * 3 + 5)
    with client(sock_path) as tr:
        ops.files["d/f.bin"] = data
        assert tr.read_bytes("d/f.bin") == data
        assert tr.read_bytes("d/f.bin", offset=len(data) - 5) == data[-5:]
        assert tr.read_bytes("d/f.bin", offset=len(data) + 3) == b""
        with pytest.raises(FileNotFoundError):
            tr.read_bytes("nope.log", offset=10)
        # an error in the middle of a stream
        ops.files["big.bad"] = b"b" * 300_000
        with pytest.raises(RemoteError, match="connection dropped"):
            tr.read_bytes("big.bad")
        assert tr.read_bytes("d/f.bin", offset=1) == data[1:]
        assert len(tr._pool) == 1


def test_get_tar(agent: AgentServer, ops: FakeOps, sock_path: Path, tmp_path: Path) -> None:
    ops.files.update({"a": b"A" * 2_500_000, "b": b"B" * 10})
    seen: list[int] = []
    with client(sock_path) as tr:
        tr.get_tar("w", ["a", "b"], tmp_path / "o" / "x.tar", progress=seen.append)
        assert (tmp_path / "o" / "x.tar").read_bytes() == b"A" * 2_500_000 + b"B" * 10
        assert sum(seen) == 2_500_010 and len(seen) > 1  # a count per MiB written, and the rest
        with pytest.raises(RemoteError, match="nope"):  # after some output
            tr.get_tar("w", ["a", "nope"], tmp_path / "bad.tar")
        with pytest.raises(RemoteError, match="cd: missing"):  # before any
            tr.get_tar("missing", ["a"], tmp_path / "bad2.tar")
        tr.get_tar("w", [], tmp_path / "empty.tar")
        assert (tmp_path / "empty.tar").read_bytes() == b""
        assert tr.commands_run == 4


def test_concurrent_clients(agent: AgentServer, ops: FakeOps, sock_path: Path) -> None:
    errors: list[BaseException] = []
    shared = client(sock_path)

    def work(i: int) -> None:
        try:
            own = client(sock_path)
            for j in range(20):
                tr = own if j % 2 else shared
                r = tr.run(f"echo {i % 7} {i}-{j} x", stdin=bytes(1000 * j) if j % 3 == 0 else None)
                assert (r.rc, r.stdout) == (i % 7, f"{i}-{j}")
            own.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    shared.close()
    assert not errors, errors
    assert ops.runs == 200


def test_failed_reconnect_retries_once_on_a_fresh_agent(
    ops: FakeOps, sock_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = FakeOps()
    fresh.can_reconnect = True
    started: list[Any] = []

    def spawn(self: AgentTransport) -> None:  # what a real start does: a new server on the path
        fresh.connected = False
        fresh.connect()  # a real agent logs in before it says "ready" (and reports that login)
        self.connections_opened += fresh.take_opened()
        cm = serving(fresh, sock_path)
        cm.__enter__()
        started.append(cm)

    monkeypatch.setattr(AgentTransport, "_spawn", spawn)
    try:
        with serving(ops, sock_path) as old, client(sock_path) as tr:
            tr.connect()
            r = tr.run("hang-up")  # the old agent cannot reconnect: it says so and goes away
            assert (r.rc, r.stdout) == (127, "")  # ran on the fresh agent
            assert "could not reopen" in old.stop_reason
            assert len(started) == 1 and fresh.runs == 1
            assert tr.connections_opened == 2
        # one second chance only: when the fresh agent fails the same way, that is the error
        fresh.can_reconnect = False
        with client(sock_path) as tr2, pytest.raises(RemoteError, match="could not reconnect"):
            tr2.run("hang-up")
        assert len(started) == 2
    finally:
        for cm in started:
            cm.__exit__(None, None, None)


def test_idle_exit_and_socket_removal(ops: FakeOps, sock_path: Path) -> None:
    sock_path.parent.mkdir(parents=True, mode=0o700)
    server = AgentServer(ops, sock_path, 0.4, site="fake")
    server.bind()
    done: list[str] = []
    thread = threading.Thread(target=lambda: done.append(server.serve()), daemon=True)
    thread.start()
    tr = client(sock_path, persist=0.4)
    assert tr.run("echo 0 a x").stdout == "a"
    time.sleep(0.8)
    assert thread.is_alive()  # a connected client keeps it up
    started = time.monotonic()
    tr.close()
    thread.join(5)
    assert not thread.is_alive() and "no client" in done[0]
    assert 0.3 < time.monotonic() - started < 15  # it waited for `persist`, and did not hang
    assert not sock_path.exists()

    # removing the socket file stops it, even with a client connected
    server = AgentServer(ops, sock_path, 60, site="fake")
    server.bind()
    done.clear()
    thread = threading.Thread(target=lambda: done.append(server.serve()), daemon=True)
    thread.start()
    tr = client(sock_path)
    tr.connect()
    sock_path.unlink()
    thread.join(5)
    assert not thread.is_alive() and "removed" in done[0]
    tr.close()


def test_replaced_socket_stops_the_old_agent_only(ops: FakeOps, sock_path: Path) -> None:
    with serving(ops, sock_path) as first:
        with serving(FakeOps(), sock_path) as second:  # binds a new socket over the same path
            deadline = time.monotonic() + 5
            while not first._stop.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "replaced" in first.stop_reason
            assert sock_path.exists() and second.owns_socket()  # the old one did not remove the new socket
        assert not sock_path.exists()


def test_long_socket_path(ops: FakeOps, home: Path) -> None:
    path = home / ("d" * 120) / "fake-0123456789abcdef.sock"
    assert len(str(path)) > 108
    with serving(ops, path), client(path) as tr:
        assert tr.run("echo 0 long x").stdout == "long"


def test_socket_path_depends_on_settings(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = agent_socket_path(SETTINGS, "lumi")
    assert a == agent_socket_path(SshSettings(host="fake.invalid", user="alice"), "lumi")
    assert a.name.startswith("lumi-") and a.suffix == ".sock"
    assert a != agent_socket_path(SshSettings(host="fake.invalid", user="bob"), "lumi")
    assert a != agent_socket_path(SETTINGS, "jupiter")
    (home / "ssh_config").write_text("Host x\n  Port 2\n")
    assert a != agent_socket_path(SETTINGS, "lumi")  # the ssh_config changed


def test_make_transport(home: Path) -> None:
    from aifactory_cli.transport.ssh.connection import SshTransport

    assert isinstance(make_transport(SETTINGS, site="x", interactive=False, persist=0), SshTransport)
    tr = make_transport(SETTINGS, site="x", interactive=False, persist=30)
    assert isinstance(tr, AgentTransport) and tr.persist == 30


def test_client_module_imports_no_ssh_stack() -> None:
    code = (
        "import sys, aifactory_cli.transport.agent.client; "
        "print(sorted(m for m in ('paramiko', 'cryptography', 'pydantic', 'aifactory_cli.transport.ssh', "
        "'aifactory_cli.transport.ssh.connection') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_killed_agent_leaves_a_stale_socket_that_is_replaced(
    ops: FakeOps, sock_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a socket file nobody listens on (the agent was SIGKILLed)
    sock_path.parent.mkdir(parents=True, mode=0o700)
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(sock_path))
    dead.close()
    started: list[Any] = []

    def spawn(self: AgentTransport) -> None:
        assert not sock_path.exists()  # the stale file was removed first
        cm = serving(ops, sock_path)
        cm.__enter__()
        started.append(cm)

    monkeypatch.setattr(AgentTransport, "_spawn", spawn)
    try:
        with client(sock_path) as tr:
            assert tr.run("echo 0 up x").stdout == "up"
    finally:
        for cm in started:
            cm.__exit__(None, None, None)
    assert len(started) == 1


def test_unknown_request_and_garbage(agent: AgentServer, sock_path: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock_path))
    conn = FrameConn(s)
    conn.send_json({"op": "format-disk"})
    reply = conn.recv_json()
    assert reply["ok"] is False and "format-disk" in reply["error"]["message"]
    conn.send_frame(END)  # out of place: the agent drops this client, and only it
    with pytest.raises(PeerGone):
        conn.recv_frame()
    conn.close()
    with client(sock_path) as tr:
        assert tr.run("echo 0 fine x").stdout == "fine"


def test_run_to_file_the_agent_writes_appends_and_hashes_the_whole_file(
    agent: AgentServer, ops: FakeOps, sock_path: Path, tmp_path: Path
) -> None:
    import errno
    import hashlib

    ops.files.update({"a": b"A" * 3_000_000})
    part = tmp_path / "p" / "a.part"
    part.parent.mkdir()
    part.write_bytes(b"earlier bytes ")
    seen: list[int] = []
    with client(sock_path) as tr:
        done = tr.run_to_file("cd w && tar", part, append=True, digest=True, stdin=b"a\0", progress=seen.append)
        whole = b"earlier bytes " + b"A" * 3_000_000
        assert (done.rc, done.written, part.read_bytes()) == (0, 3_000_000, whole)
        assert done.sha256 == hashlib.sha256(whole).hexdigest() and sum(seen) == 3_000_000
        bad = tr.run_to_file("cd w && tar", tmp_path / "q", stdin=b"nope\0")
        assert (bad.rc, bad.stderr, bad.sha256) == (2, "tar: nope: Cannot stat", None)
        with pytest.raises(OSError) as full:  # this machine's disk, not the site: the same OSError
            tr.run_to_file("cd w && tar", Path("/dev/full"), stdin=b"a\0")
        assert full.value.errno == errno.ENOSPC
        assert tr.read_bytes("a")[:3] == b"AAA"  # the connection is still in step


def test_a_local_file_as_stdin_is_read_by_the_agent(
    agent: AgentServer, ops: FakeOps, sock_path: Path, tmp_path: Path
) -> None:
    """`LocalFile` stdin (a large upload): the agent reads the file itself from the offset, the
    client hears the bytes sent (per MiB); a file that is not there is the client's error."""
    from aifactory_cli.transport import LocalFile

    data = os.urandom(3_000_000)
    (tmp_path / "big.bin").write_bytes(data)
    seen: list[int] = []
    with client(sock_path) as tr:
        r = tr.run("count", stdin=LocalFile(tmp_path / "big.bin", 1000, seen.append))
        assert (r.rc, r.stdout) == (0, str(len(data) - 1000))
        assert sum(seen) == len(data) - 1000 and len(seen) >= 2
        (tmp_path / "digits").write_bytes(b"0123456789" * 100_000)
        assert tr.run("head 5", stdin=LocalFile(tmp_path / "digits", 7)).stdout == "78901"
        with pytest.raises(FileNotFoundError):
            tr.run("count", stdin=LocalFile(tmp_path / "gone.bin"))
        assert tr.run("echo 0 fine ''").stdout == "fine"  # the connection is still in step


def test_a_local_tar_as_stdin_is_written_by_the_agent(
    agent: AgentServer, ops: FakeOps, sock_path: Path, tmp_path: Path
) -> None:
    """`LocalTar` stdin (the data store's small files): only its listing crosses the socket, the agent
    reads the files and writes the tar, the client hears the file bytes; a file that is gone is the
    client's error and the connection stays in step."""
    import io

    from aifactory_cli.transport.tarstream import LocalTar

    (tmp_path / "a").write_bytes(os.urandom(1_500_000))
    (tmp_path / "b").write_bytes(b"bee")
    listing = (
        LocalTar.file_record("x/a", str(tmp_path / "a"), 1_500_000, 0o400, 1)
        + LocalTar.file_record("x/b", str(tmp_path / "b"), 3, 0o400, 1, hashlib.sha256(b"not bee").hexdigest())
        + LocalTar.link_record("t/a", "x/a", 1)
    )
    tar = LocalTar(listing)
    whole = io.BytesIO()
    tar(whole)
    seen: list[int] = []
    with client(sock_path) as tr:
        sent = LocalTar(listing, seen.append)
        r = tr.run("count", stdin=sent)
        assert (r.rc, r.stdout) == (0, str(len(whole.getvalue())))
        assert sum(seen) == 1_500_003
        # the agent's reply: the digest of the stream it wrote, the file that did not match its digest
        assert (sent.sha256, sent.changed) == (hashlib.sha256(whole.getvalue()).hexdigest(), ["x/b"])
        with pytest.raises(FileNotFoundError):
            tr.run("count", stdin=LocalTar(LocalTar.file_record("g", str(tmp_path / "gone"), 1, 0o400, 1)))
        with pytest.raises(RemoteError, match="damaged tar listing"):  # nothing is started
            tr.run("count", stdin=LocalTar(b"F\0a\0"))
        assert tr.run("echo 0 fine ''").stdout == "fine"
