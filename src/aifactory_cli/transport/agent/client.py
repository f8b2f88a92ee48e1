"""The CLI side of the connection agent: one long-lived process per site keeps the SSH connection open
(like OpenSSH ControlMaster/ControlPersist), CLI commands talk to it over a Unix socket.

A CLI command that goes through the agent neither imports paramiko (~130 ms) nor logs in (40-60 ms,
MFA prompts on some sites, and sites such as JSC block hosts that connect too often). This module
uses only the standard library (socket/json/struct/subprocess): never import paramiko or
`aifactory_cli.transport.ssh` here.

- `make_transport(settings, site=..., interactive=..., persist=...)`: `persist <= 0` gives the plain
  in-process `SshTransport`; otherwise an `AgentTransport` with the same public surface.
- The socket is `state_dir()/agents/<site>-<hash>.sock` (dir 0700, socket 0600); the hash covers the
  SSH settings, the ssh_config file's content (not files it includes), the user, the machine and
  the package/protocol version, so a changed setting gets a new agent (the old one exits when idle).
- No agent answering: the CLI starts `python -m aifactory_cli.transport.agent.server` under a lock file (one start at
  a time per socket). The agent logs in first, while it still shares the CLI's terminal (stdin and
  stderr, so keyboard-interactive/MFA prompts reach the user), reports "ready" or the error on a
  pipe, then leaves the terminal's session and serves the socket, logging to `<name>.log`.
  A failed login leaves no agent behind and raises the same error as `SshTransport`.

Protocol (one request at a time per connection; a CLI process keeps a small pool of connections).
Every frame is `struct ">BI"` (kind, payload length) then the payload:

- `J` a JSON object; `D` a chunk of binary data (at most `CHUNK` bytes); `E` end of a data stream;
  `A` the client aborts the stream it was sending; `X` a data stream ends with an error (JSON).
- requests: `hello` (version, persist) · `connect` · `run` (command line, timeout, stdin: bool) ·
  `put` (path, mode; then the data as a stream) · `read` (path, offset) · `tar` (workdir, files) ·
  `shutdown`.
- replies: `{"ok": true, "opened": n, ...}` or `{"ok": false, "error": {...}, "agent_exiting": bool}`;
  `opened` counts the SSH connections the request made the agent open. `read`/`tar` replies are
  followed by a data stream (which may end in `X`), `run` replies by stdout then stderr streams.
- stdin of `run`: the agent answers `{"event": "stdin"}` once the remote command has started (so an
  error before that, e.g. a failed reconnect, arrives without any input sent); the client then
  streams its writer's output; `{"event": "stdin-closed"}` from the agent means the remote command
  stopped reading (the client's writer gets BrokenPipeError, as with SshTransport). Nothing is
  buffered whole on either side.
- errors carry the class name, message, hint and `where`; the client re-raises the same class from
  `aifactory_cli.errors` (or FileNotFoundError). `agent_exiting` means the agent could not
  reconnect and is going away: the client starts a fresh agent (which may prompt on its terminal)
  and retries once when nothing was sent yet.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import select
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aifactory_cli import errors as _errors
from aifactory_cli import settings as app_settings
from aifactory_cli.errors import AifactoryError, RemoteError
from aifactory_cli.paths import ensure_private_dir, state_dir
from aifactory_cli.transport import Command, CommandResult, Progress, Stdin, Transport, to_shell

if TYPE_CHECKING:
    from aifactory_cli.sites.profile import SshSettings

PROTOCOL = 1
CHUNK = 256 * 1024
MAX_FRAME = 16 * 1024 * 1024
HEADER = struct.Struct(">BI")
JSON, DATA, END, ABORT, ERROR = (ord(c) for c in "JDEAX")
HELLO_TIMEOUT = 10.0
MAX_SUN_PATH = 100  # sockaddr_un.sun_path is 108 bytes on Linux, 104 on macOS
SSH_CONFIG_ENV = app_settings.SSH_CONFIG
AGENT_MODULE = "aifactory_cli.transport.agent.server"
SETTINGS_ENV = app_settings.AGENT_SETTINGS  # how the CLI hands the SSH settings to the agent it starts

T = TypeVar("T")


# --- framing ----------------------------------------------------------------------------------------


class PeerGone(Exception):
    """The other end of the agent socket closed or failed."""


class ProtocolError(Exception):
    """A frame that makes no sense here (a bug, or not an aifactory agent)."""


class FrameConn:
    """Length-prefixed frames over a stream socket (see the module docstring)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        # shutdown() first: a copy of the descriptor held by a process forked meanwhile (any thread's
        # subprocess, between its fork and exec) would otherwise keep the peer from seeing EOF.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()

    # sending

    def send_frame(self, kind: int, payload: bytes | bytearray | memoryview = b"") -> None:
        if len(payload) > MAX_FRAME:
            raise ProtocolError(f"frame of {len(payload)} bytes is too big")
        try:
            self.sock.sendall(HEADER.pack(kind, len(payload)) + bytes(payload))
        except OSError as exc:
            raise PeerGone(str(exc) or type(exc).__name__) from exc

    def send_json(self, obj: dict[str, Any]) -> None:
        self.send_frame(JSON, json.dumps(obj, separators=(",", ":")).encode())

    def send_data(self, data: bytes | bytearray | memoryview) -> None:
        """`data` as a stream: DATA frames of at most CHUNK bytes, then END."""
        view = memoryview(data)
        for i in range(0, len(view), CHUNK):
            self.send_frame(DATA, view[i : i + CHUNK])
        self.send_frame(END)

    # receiving

    def _fill(self, n: int) -> None:
        while len(self._buf) < n:
            try:
                data = self.sock.recv(max(n - len(self._buf), 64 * 1024))
            except OSError as exc:
                raise PeerGone(str(exc) or type(exc).__name__) from exc
            if not data:
                raise PeerGone("connection closed")
            self._buf += data

    def recv_frame(self) -> tuple[int, bytes]:
        self._fill(HEADER.size)
        kind, length = HEADER.unpack_from(self._buf)
        if length > MAX_FRAME or kind not in (JSON, DATA, END, ABORT, ERROR):
            raise ProtocolError(f"bad frame header (kind {kind}, {length} bytes)")
        self._fill(HEADER.size + length)
        payload = bytes(self._buf[HEADER.size : HEADER.size + length])
        del self._buf[: HEADER.size + length]
        return kind, payload

    def recv_json(self) -> dict[str, Any]:
        kind, payload = self.recv_frame()
        if kind != JSON:
            raise ProtocolError(f"expected a JSON frame, got {chr(kind)!r}")
        try:
            obj = json.loads(payload)
        except ValueError as exc:
            raise ProtocolError(f"bad JSON frame: {exc}") from exc
        if not isinstance(obj, dict):
            raise ProtocolError("a JSON frame must hold an object")
        return obj

    def recv_stream(self, sink: Callable[[bytes], object]) -> None:
        """DATA frames into `sink` until END; an ERROR frame raises `StreamError`."""
        while True:
            kind, payload = self.recv_frame()
            if kind == DATA:
                sink(payload)
            elif kind == END:
                return
            elif kind == ERROR:
                raise StreamError(json.loads(payload))
            else:
                raise ProtocolError(f"unexpected frame {chr(kind)!r} in a data stream")

    def recv_bytes(self) -> bytes:
        buf = bytearray()
        self.recv_stream(buf.extend)
        return bytes(buf)

    def readable_now(self) -> bool:
        """Something (data or EOF) is waiting to be read."""
        if self._buf:
            return True
        try:
            ready, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(ready)


class StreamError(Exception):
    """A data stream ended with an ERROR frame (its JSON in `.error`)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", ""))
        self.error = error


# --- errors over the wire ----------------------------------------------------------------------------

_PLAIN = (bool, int, float, str, type(None))


def error_to_json(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, AifactoryError):
        bases = [c.__name__ for c in type(exc).__mro__[1:] if issubclass(c, AifactoryError)]
        attrs = {k: v for k, v in vars(exc).items() if k not in ("message", "hint", "where") and isinstance(v, _PLAIN)}
        return {
            "type": type(exc).__name__,
            "bases": bases,
            "message": exc.message,
            "hint": exc.hint,
            "where": exc.where,
            "attrs": attrs,
        }
    if isinstance(exc, FileNotFoundError):
        return {"type": "FileNotFoundError", "errno": exc.errno, "strerror": exc.strerror, "filename": exc.filename}
    return {"type": type(exc).__name__, "message": str(exc) or repr(exc)}


def error_from_json(error: dict[str, Any] | None, site: str | None = None, log: Path | None = None) -> Exception:
    """The exception the agent raised, as the same class (aifactory errors, FileNotFoundError)."""
    error = error or {}
    kind = str(error.get("type") or "Error")
    if kind == "FileNotFoundError":
        return FileNotFoundError(error.get("errno") or errno.ENOENT, error.get("strerror") or "", error.get("filename"))
    message = str(error.get("message") or "")
    for name in [kind, *error.get("bases", [])]:
        cls = getattr(_errors, name, None)
        if isinstance(cls, type) and issubclass(cls, AifactoryError):
            try:
                exc = cls(message, error.get("hint"), where=error.get("where"))
            except TypeError:
                continue
            for key, value in (error.get("attrs") or {}).items():
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(exc, key, value)
            return exc
    return RemoteError(
        f"the connection agent failed: {kind}: {message}",
        f"its log is {log}; set AIFACTORY_PERSIST=0 (or ssh.persist: 0) to connect without an agent" if log else None,
        where=site,
    )


# --- where the agent lives -------------------------------------------------------------------------------


def agents_dir() -> Path:
    return state_dir() / "agents"


def _ssh_config_path() -> Path:
    return app_settings.current().ssh_config_file()


def _absolute(path: str | None) -> str | None:
    """A relative path made absolute against the CLI's cwd (the agent runs elsewhere)."""
    if not path or path.startswith(("~", "$")) or os.path.isabs(path):
        return path
    return os.path.abspath(path)


def _settings_json(settings: SshSettings) -> dict[str, Any]:
    data: dict[str, Any] = settings.model_dump(mode="json")
    data.pop("notes", None)
    for key in ("identity_file", "known_hosts"):
        data[key] = _absolute(data.get(key))
    return data


def settings_hash(settings: SshSettings, site: str) -> str:
    """What makes two CLI commands share an agent: same site, same resolved SSH settings."""
    from aifactory_cli import __version__

    config = _ssh_config_path()
    try:
        config_digest = hashlib.sha256(config.read_bytes()).hexdigest()
    except OSError:
        config_digest = None
    blob = {
        "protocol": PROTOCOL,
        "version": __version__,
        "site": site,
        "settings": _settings_json(settings),
        "ssh_config": str(config.absolute()),
        "ssh_config_sha256": config_digest,
        "home": os.path.expanduser("~"),
        "uid": os.getuid(),
        "host": socket.gethostname(),  # a home shared by several machines: one agent per machine
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def agent_socket_path(settings: SshSettings, site: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", site)[:40] or "site"
    return agents_dir() / f"{safe}-{settings_hash(settings, site)}.sock"


def socket_path_usable(path: Path) -> bool:
    return len(os.fsencode(str(path))) <= MAX_SUN_PATH or os.path.isdir("/proc/self/fd")


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An address for bind/connect: the path, or (too long for sun_path) a /proc/self/fd alias."""
    if len(os.fsencode(str(path))) <= MAX_SUN_PATH:
        yield str(path)
        return
    if not os.path.isdir("/proc/self/fd"):
        raise OSError(errno.ENAMETOOLONG, "path too long for a Unix socket", str(path))
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (None: this OS cannot tell)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _stdin_isatty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        return False


# --- the client --------------------------------------------------------------------------------------


def make_transport(settings: SshSettings, *, site: str, interactive: bool | None, persist: float) -> Transport:
    """The transport for a remote site: through the site's agent when `persist` > 0 (seconds the
    agent stays up without a client), else the in-process SshTransport."""
    if persist > 0:
        path = agent_socket_path(settings, site)
        if socket_path_usable(path):
            return AgentTransport(settings, site=site, interactive=interactive, persist=persist, socket_path=path)
    from aifactory_cli.transport.ssh import SshTransport

    return SshTransport(settings, site=site, interactive=interactive)


class _Reply(Exception):
    """A complete reply that is an error: raise `exc` once the connection is back in the pool."""

    def __init__(self, exc: BaseException, *, exiting: bool = False, fresh_ok: bool = True) -> None:
        super().__init__(str(exc))
        self.exc = exc
        self.exiting = exiting
        self.fresh_ok = fresh_ok


class _StdinFrames(io.RawIOBase):
    """The writer a command's stdin function writes into: DATA frames to the agent."""

    def __init__(self, conn: FrameConn) -> None:
        self.conn = conn
        self.broken = False  # the agent said the remote command stopped reading
        self.discard = False

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if self.discard:
            return len(view)
        for i in range(0, len(view), CHUNK):
            self._check_closed()
            self.conn.send_frame(DATA, view[i : i + CHUNK])
        return len(view)

    def _check_closed(self) -> None:
        if self.broken:
            raise BrokenPipeError("the remote command does not read its input any more")
        if self.conn.readable_now():
            msg = self.conn.recv_json()
            if msg.get("event") != "stdin-closed":
                raise ProtocolError(f"unexpected message while sending input: {msg}")
            self.broken = True
            raise BrokenPipeError("the remote command does not read its input any more")


class AgentTransport:
    """Commands and files on a site through its connection agent (same surface as SshTransport)."""

    name = "ssh"

    def __init__(
        self,
        settings: SshSettings,
        *,
        site: str,
        interactive: bool | None = None,
        persist: float = 600.0,
        socket_path: Path | None = None,
    ) -> None:
        self.settings = settings
        self.site = site
        self.interactive = interactive
        self.persist = persist
        self.socket_path = socket_path or agent_socket_path(settings, site)
        self.connections_opened = 0  # SSH logins this process caused (0 when an agent was reused)
        self.commands_run = 0
        self.agent_pid: int | None = None
        self.started_agent = False  # this process started the agent it talks to
        self.agent_info: dict[str, Any] = {}  # the agent's last hello (pid, its own counters...)
        self._username: str | None = None
        self._pool: list[FrameConn] = []
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def log_path(self) -> Path:
        return self.socket_path.with_suffix(".log")

    @property
    def lock_path(self) -> Path:
        return self.socket_path.with_suffix(".lock")

    @property
    def username(self) -> str:
        """The user logged in as on the login node (asks the agent, starting it if needed)."""
        if self._username is None:
            self._call(lambda conn: None)
        assert self._username is not None
        return self._username

    def __enter__(self) -> AgentTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- connections to the agent ---------------------------------------------------------------

    def _try_connect(self) -> FrameConn | None:
        """A connection to a live agent that said hello, or None (no agent, or a dying one)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with unix_address(self.socket_path) as address:
                sock.connect(address)
        except OSError:
            sock.close()
            return None
        uid = peer_uid(sock)
        if uid is not None and uid != os.getuid():
            sock.close()
            raise RemoteError(
                f"the agent socket {self.socket_path} belongs to another user (uid {uid})",
                f"remove it; {self.socket_path.parent} must be yours and private",
                where=self.site,
            )
        conn = FrameConn(sock)
        try:
            sock.settimeout(HELLO_TIMEOUT)
            conn.send_json({"op": "hello", "version": PROTOCOL, "persist": self.persist})
            reply = conn.recv_json()
            sock.settimeout(None)
        except (PeerGone, ProtocolError, OSError):
            conn.close()
            return None
        if not reply.get("ok") or reply.get("version") != PROTOCOL:
            conn.close()
            return None
        self._username = str(reply.get("username") or "") or self._username
        self.agent_pid = reply.get("pid")
        self.agent_info = reply
        return conn

    def _checkout(self) -> FrameConn:
        with self._lock:
            while self._pool:
                conn = self._pool.pop()
                if conn.readable_now():  # EOF: that agent went away
                    conn.close()
                    continue
                return conn
        fresh = self._try_connect()
        return fresh if fresh is not None else self._start_agent()

    def _checkin(self, conn: FrameConn) -> None:
        with self._lock:
            self._pool.append(conn)

    def _drop_pool(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, []
        for conn in pool:
            conn.close()

    def _start_agent(self) -> FrameConn:
        with self._start_lock:
            ensure_private_dir(self.socket_path.parent)
            lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)  # one start at a time (another CLI may be at it)
                conn = self._try_connect()
                if conn is not None:
                    return conn
                with contextlib.suppress(FileNotFoundError):
                    self.socket_path.unlink()  # left by an agent that was killed, or one that is dying
                self._spawn()
                conn = self._try_connect()
            finally:
                os.close(lock_fd)
        if conn is None:
            raise RemoteError(
                f"the connection agent for {self.site} started but does not answer on {self.socket_path}",
                f"see {self.log_path}; set AIFACTORY_PERSIST=0 (or ssh.persist: 0) to connect without an agent",
                where=self.site,
            )
        return conn

    def _spawn(self) -> None:
        """Start the agent; it logs in (prompting on our terminal if needed) before it reports."""
        interactive = self.interactive if self.interactive is not None else _stdin_isatty()
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[3])  # the dir that holds aifactory_cli/
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        if env.get(SSH_CONFIG_ENV):
            env[SSH_CONFIG_ENV] = str(Path(env[SSH_CONFIG_ENV]).expanduser().absolute())
        cmd = [
            sys.executable,
            "-m",
            AGENT_MODULE,
            "--socket",
            str(self.socket_path),
            "--site",
            self.site,
            "--persist",
            repr(float(self.persist)),
            "--interactive" if interactive else "--batch",
        ]
        env[SETTINGS_ENV] = json.dumps(_settings_json(self.settings), separators=(",", ":"))  # not in `ps`
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=None if interactive else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=None,  # our stderr: prompts and the banner of a login go to the user
                env=env,
                close_fds=True,
            )
        except OSError as exc:
            raise RemoteError(
                f"cannot start the connection agent for {self.site}: {exc}",
                "set AIFACTORY_PERSIST=0 (or ssh.persist: 0) to connect without an agent",
                where=self.site,
            ) from exc
        assert proc.stdout is not None
        try:
            line = proc.stdout.readline()
        except BaseException:  # Ctrl-C during an MFA prompt...
            _terminate(proc)
            raise
        finally:
            proc.stdout.close()
        try:
            msg = json.loads(line) if line.strip() else None
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or not msg.get("ok"):
            try:
                rc: int | None = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _terminate(proc)
                rc = proc.returncode
            if isinstance(msg, dict) and isinstance(msg.get("error"), dict):
                raise error_from_json(msg["error"], self.site, self.log_path)
            raise RemoteError(
                f"the connection agent for {self.site} exited (status {rc}) before it was ready",
                "its messages are above; set AIFACTORY_PERSIST=0 (or ssh.persist: 0) to connect without an agent",
                where=self.site,
            )
        self._procs.append(proc)  # our child: reaped in close()
        self.started_agent = True
        self.agent_pid = msg.get("pid")
        with self._lock:
            self.connections_opened += int(msg.get("opened", 0))

    # --- requests ------------------------------------------------------------------------------

    def _reply(self, conn: FrameConn, first: dict[str, Any] | None = None, *, fresh_ok: bool = True) -> dict[str, Any]:
        msg = first if first is not None else conn.recv_json()
        while "event" in msg:  # a late "stdin-closed"
            msg = conn.recv_json()
        opened = int(msg.get("opened") or 0)
        if opened:
            with self._lock:
                self.connections_opened += opened
        if not msg.get("ok"):
            exc = error_from_json(msg.get("error"), self.site, self.log_path)
            raise _Reply(exc, exiting=bool(msg.get("agent_exiting")), fresh_ok=fresh_ok)
        return msg

    def _stream(self, conn: FrameConn, sink: Callable[[bytes], object]) -> None:
        try:
            conn.recv_stream(sink)
        except StreamError as exc:
            raise _Reply(error_from_json(exc.error, self.site, self.log_path)) from None

    def _call(self, request: Callable[[FrameConn], T], *, idempotent: bool = True) -> T:
        """Run one request on a pooled connection. A failed reconnect in the agent (it exits) is
        retried once on a fresh agent when nothing was sent yet."""
        for attempt in (1, 2):
            conn = self._checkout()
            try:
                result = request(conn)
            except _Reply as reply:
                self._checkin(conn)
                if reply.exiting:
                    self._drop_pool()
                    if attempt == 1 and reply.fresh_ok:
                        continue
                raise reply.exc from None
            except (PeerGone, ProtocolError) as exc:
                conn.close()
                if attempt == 1 and idempotent:
                    self._drop_pool()
                    continue
                raise RemoteError(
                    f"the connection agent for {self.site} went away during a request ({exc}); its outcome is unknown",
                    f"check on the site whether it took effect before retrying; the agent's log is {self.log_path}",
                    where=self.site,
                ) from exc
            except BaseException:
                conn.close()  # mid-request (Ctrl-C, a local error): the connection is out of step
                raise
            self._checkin(conn)
            return result
        raise AssertionError("unreachable")

    def connect(self) -> None:
        """Make sure the agent runs and is logged in (starting it here logs in, with prompts)."""

        def request(conn: FrameConn) -> None:
            conn.send_json({"op": "connect"})
            self._reply(conn)

        self._call(request)

    def run(self, command: Command, *, stdin: Stdin = None, timeout: float | None = None) -> CommandResult:
        line = to_shell(command)
        with self._lock:
            self.commands_run += 1

        def request(conn: FrameConn) -> CommandResult:
            conn.send_json({"op": "run", "command": line, "timeout": timeout, "stdin": stdin is not None})
            local_error: Exception | None = None
            first: dict[str, Any] | None = None
            sent = False
            if stdin is not None:
                first = conn.recv_json()  # "go ahead", or the reply (an error before the command started)
                if first.get("event") == "stdin":
                    first, sent = None, True
                    local_error = self._send_stdin(conn, stdin)
            try:
                msg = self._reply(conn, first, fresh_ok=not sent)
            except _Reply:
                if local_error is not None:
                    raise _Reply(local_error) from None
                raise
            out, err = conn.recv_bytes(), conn.recv_bytes()
            if local_error is not None:
                raise _Reply(local_error)
            return CommandResult(_int(msg.get("rc")), out.decode(errors="replace"), err.decode(errors="replace"))

        return self._call(request, idempotent=False)

    def _send_stdin(self, conn: FrameConn, stdin: Stdin) -> Exception | None:
        """Stream the command's input; returns the local writer's error (then the stream was aborted)."""
        raw = _StdinFrames(conn)
        writer = io.BufferedWriter(raw, buffer_size=CHUNK)
        failure: Exception | None = None
        try:
            if callable(stdin):
                stdin(writer)
            elif stdin is not None:
                writer.write(stdin)
            writer.flush()
        except BrokenPipeError as exc:
            if not raw.broken:  # a local pipe, not the remote command
                failure = exc
        except (PeerGone, ProtocolError):
            raise
        except Exception as exc:
            failure = exc
        finally:
            raw.discard = True  # whatever is still buffered (after an error) goes nowhere
            writer.close()
        conn.send_frame(ABORT if failure is not None else END)
        return failure

    def put_bytes(self, data: bytes, path: str, mode: int = 0o600) -> None:
        def request(conn: FrameConn) -> None:
            conn.send_json({"op": "put", "path": path, "mode": mode})
            conn.send_data(data)
            self._reply(conn)

        self._call(request)

    def read_bytes(self, path: str, offset: int = 0) -> bytes:
        def request(conn: FrameConn) -> bytes:
            conn.send_json({"op": "read", "path": path, "offset": offset})
            self._reply(conn)
            buf = bytearray()
            self._stream(conn, buf.extend)
            return bytes(buf)

        return self._call(request)

    def get_file(self, path: str, local: Path, progress: Progress | None = None) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        part = local.with_name(f".{local.name}.part")

        def request(conn: FrameConn) -> None:
            conn.send_json({"op": "read", "path": path, "offset": 0})
            self._reply(conn)
            with open(part, "wb") as fh:

                def sink(data: bytes) -> None:
                    fh.write(data)
                    if progress:
                        progress(len(data))

                self._stream(conn, sink)

        try:
            self._call(request)
            os.replace(part, local)
        except BaseException:
            with contextlib.suppress(OSError):
                part.unlink()
            raise

    def get_tar(self, workdir: str, files: list[str], local_archive: Path, progress: Progress | None = None) -> None:
        """Pack `files` (relative to `workdir`) on the site and stream the tar into `local_archive`."""
        with self._lock:
            self.commands_run += 1
        local_archive.parent.mkdir(parents=True, exist_ok=True)

        def request(conn: FrameConn) -> None:
            conn.send_json({"op": "tar", "workdir": workdir, "files": files})
            self._reply(conn)
            with open(local_archive, "wb") as fh:

                def sink(data: bytes) -> None:
                    fh.write(data)
                    if progress:
                        progress(len(data))

                self._stream(conn, sink)

        self._call(request, idempotent=False)

    def shutdown_agent(self) -> None:
        """Ask the agent to exit now (it finishes the requests in flight)."""
        conn = self._try_connect()
        if conn is None:
            return
        try:
            conn.send_json({"op": "shutdown"})
            conn.recv_json()
        except (PeerGone, ProtocolError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        """Forget our connections to the agent (the agent stays up for the next command)."""
        self._drop_pool()
        for proc in self._procs:
            proc.poll()  # reap it if it has exited meanwhile


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 255


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        proc.terminate()
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()


__all__ = [
    "PROTOCOL",
    "AgentTransport",
    "FrameConn",
    "agent_socket_path",
    "error_from_json",
    "error_to_json",
    "make_transport",
]
