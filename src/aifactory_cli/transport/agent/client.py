"""The CLI side of the connection agent: one long-lived process per site keeps the SSH connection open
(like OpenSSH ControlMaster/ControlPersist), CLI commands talk to it over a Unix socket.

A CLI command that goes through the agent neither imports paramiko (~130 ms) nor logs in (40-60 ms,
MFA prompts on some sites, and sites such as JSC block hosts that connect too often). This module
uses only the standard library (socket/json/struct/subprocess): never import paramiko or
`aifactory_cli.transport.ssh` here.

- `make_transport(settings, site=..., interactive=..., persist=...)`: `persist <= 0` gives the plain
  in-process `SshTransport`; otherwise an `AgentTransport` with the same public surface.
- Where the agent's socket is and how it is started: `launch.py`; the frames: `protocol.py`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aifactory_cli.errors import RemoteError
from aifactory_cli.paths import ensure_private_dir
from aifactory_cli.transport import Command, CommandResult, LocalFile, Progress, Stdin, Transport, Tunnel, to_shell
from aifactory_cli.transport.agent.launch import agent_socket_path, spawn_agent, stdin_isatty
from aifactory_cli.transport.agent.protocol import (
    HELLO_TIMEOUT,
    PROTOCOL,
    FrameConn,
    PeerGone,
    ProtocolError,
    StreamError,
    error_from_json,
    peer_uid,
    socket_path_usable,
    unix_address,
)
from aifactory_cli.transport.agent.session import AgentSession, open_session
from aifactory_cli.transport.agent.stdin import send_stdin
from aifactory_cli.transport.relay import SocketPipe
from aifactory_cli.transport.tarstream import LocalTar
from aifactory_cli.transport.tofile import ToFile, check_tar, tar_command, tar_names

if TYPE_CHECKING:
    from aifactory_cli.transport.interactive import PtyRequest
    from aifactory_cli.transport.ssh.settings import SshSettings

T = TypeVar("T")


# --- the client --------------------------------------------------------------------------------------


def make_transport(settings: SshSettings, *, site: str, interactive: bool | None, persist: float) -> Transport:
    """The transport for a remote site: through the site's agent when `persist` > 0 (seconds the
    agent stays up without a client), else the in-process SshTransport."""
    if persist > 0:
        path = agent_socket_path(settings, site)
        if socket_path_usable(path):
            return AgentTransport(settings, site=site, interactive=interactive, persist=persist, socket_path=path)
    from aifactory_cli.transport.ssh.connection import SshTransport

    return SshTransport(settings, site=site, interactive=interactive)


class _Reply(Exception):
    """A complete reply that is an error: raise `exc` once the connection is back in the pool."""

    def __init__(self, exc: BaseException, *, exiting: bool = False, fresh_ok: bool = True) -> None:
        super().__init__(str(exc))
        self.exc = exc
        self.exiting = exiting
        self.fresh_ok = fresh_ok


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
        """Start the agent (see `launch.spawn_agent`) and count the login it made for us."""
        interactive = self.interactive if self.interactive is not None else stdin_isatty()
        proc, msg = spawn_agent(
            self.settings, site=self.site, socket_path=self.socket_path, persist=self.persist, interactive=interactive
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

    def _call(self, request: Callable[[FrameConn], T], *, idempotent: bool = True, keep: bool = True) -> T:
        """Run one request on a pooled connection (back in the pool after it unless not `keep`). A
        failed reconnect in the agent (it exits) is retried once on a fresh agent when nothing was
        sent yet."""
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
            if keep:
                self._checkin(conn)
            return result
        raise AssertionError("unreachable")

    def connect(self) -> None:
        """Make sure the agent runs and is logged in (starting it here logs in, with prompts)."""
        self._connect()

    def _connect(self) -> dict[str, Any]:
        def request(conn: FrameConn) -> dict[str, Any]:
            conn.send_json({"op": "connect"})
            return self._reply(conn)

        return self._call(request)

    def host_key(self) -> str | None:
        """The login node's host key as the agent's connection verified it (`TYPE BASE64`)."""
        found = self._connect().get("host_key")
        return found if isinstance(found, str) else None

    def run(self, command: Command, *, stdin: Stdin = None, timeout: float | None = None) -> CommandResult:
        line = to_shell(command)
        with self._lock:
            self.commands_run += 1

        def request(conn: FrameConn) -> CommandResult:
            req: dict[str, Any] = {"op": "run", "command": line, "timeout": timeout, "stdin": stdin is not None}
            if isinstance(stdin, LocalFile):  # the agent reads the file: only byte counts come back
                req.update(stdin=False, stdin_file={"path": os.path.abspath(stdin.path), "offset": stdin.offset})
            elif isinstance(stdin, LocalTar):  # the agent reads the files and writes the tar
                req.update(stdin=False, stdin_tar=True)
            conn.send_json(req)
            if isinstance(stdin, LocalTar):
                conn.send_data(stdin.listing)
            local_error: Exception | None = None
            first: dict[str, Any] | None = None
            sent = False
            if isinstance(stdin, (LocalFile, LocalTar)):
                while (first := conn.recv_json()).get("event") == "bytes":
                    sent = True
                    if stdin.progress:
                        stdin.progress(_int(first.get("n"), 0))
            elif stdin is not None:
                first = conn.recv_json()  # "go ahead", or the reply (an error before the command started)
                if first.get("event") == "stdin":
                    first, sent = None, True
                    local_error = send_stdin(conn, stdin)
            try:
                msg = self._reply(conn, first, fresh_ok=not sent)
            except _Reply:
                if local_error is not None:
                    raise _Reply(local_error) from None
                raise
            out, err = conn.recv_bytes(), conn.recv_bytes()
            if local_error is not None:
                raise _Reply(local_error)
            noise = _int(msg.get("noise"), 0)
            if isinstance(stdin, LocalTar):  # what the agent wrote: its digest, and files that changed
                digest, changed = msg.get("stdin_sha256"), msg.get("stdin_changed")
                stdin.sha256 = digest if isinstance(digest, str) else None
                stdin.changed = [str(c) for c in changed] if isinstance(changed, list) else []
            return CommandResult(_int(msg.get("rc")), out.decode(errors="replace"), err.decode(errors="replace"), noise)

        return self._call(request, idempotent=False)

    def read_bytes(self, path: str, offset: int = 0) -> bytes:
        def request(conn: FrameConn) -> bytes:
            conn.send_json({"op": "read", "path": path, "offset": offset})
            self._reply(conn)
            buf = bytearray()
            self._stream(conn, buf.extend)
            return bytes(buf)

        return self._call(request)

    def get_tar(self, workdir: str, files: list[str], local_archive: Path, progress: Progress | None = None) -> bool:
        """Pack `files` (relative to `workdir`) on the site and stream the tar into `local_archive`;
        True when the stream that arrived is the one the site's tar wrote whole (`tofile.check_tar`)."""
        done = self.run_to_file(
            tar_command(workdir), local_archive, stdin=tar_names(files), progress=progress, digest=True
        )
        return check_tar(done, workdir, self.site)

    def run_to_file(
        self,
        command: Command,
        local: Path,
        *,
        append: bool = False,
        digest: bool = False,
        stdin: bytes | None = None,
        progress: Progress | None = None,
    ) -> ToFile:
        """Run `command`; the agent writes its stdout into `local` (agent/tofile.py)."""
        with self._lock:
            self.commands_run += 1
        local.parent.mkdir(parents=True, exist_ok=True)
        req = {"op": "tofile", "command": to_shell(command), "path": os.path.abspath(local), "append": append}
        if stdin is not None:
            req["stdin"] = stdin.decode("latin-1")  # bytes as JSON text, one char each

        def request(conn: FrameConn) -> ToFile:
            conn.send_json({**req, "digest": digest})
            while (msg := conn.recv_json()).get("event") == "bytes":
                if progress:
                    progress(_int(msg.get("n"), 0))
            msg = self._reply(conn, msg)
            sha = msg.get("sha256")
            return ToFile(_int(msg.get("rc")), str(msg.get("stderr") or ""), _int(msg.get("written"), 0), sha)

        return self._call(request, idempotent=False)

    def open_session(self, line: str, pty: PtyRequest | None = None) -> AgentSession:
        """`line` on its own channel of the agent's SSH connection, relayed (`agent/session.py`)."""

        def request(conn: FrameConn) -> AgentSession:
            self._reply(conn, open_session(conn, line, pty))
            return AgentSession(conn, self.site)

        return self._call(request, idempotent=False, keep=False)  # the session keeps its conn; no retry: it may run

    def open_tunnel(self, host: str, port: int) -> Tunnel:
        """A byte stream to `host:port` from the login node, through the agent's one SSH login: a
        connection to the agent of its own, which carries the channel's raw bytes after the reply."""

        def request(conn: FrameConn) -> Tunnel:
            conn.send_json({"op": "tunnel", "host": host, "port": port})
            self._reply(conn)
            return SocketPipe(conn.sock, conn.take_buffer())

        return self._call(request, keep=False)

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


def _int(value: Any, default: int = 255) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


__all__ = ["AgentTransport", "make_transport"]
