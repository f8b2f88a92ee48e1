"""The connection agent: one process per site and SSH settings that keeps one SSH connection open and
serves CLI commands over a Unix socket (the client side and the protocol are in
`aifactory_cli.transport.agent.client`).

    AIFACTORY_AGENT_SETTINGS=JSON python -m aifactory_cli.transport.agent.server --socket PATH --site NAME \
        --persist SECONDS (--interactive|--batch)

Started by the CLI, it logs in first, on the CLI's terminal (MFA prompts reach the user), then
writes one JSON line on stdout ("ready" or the error), leaves the terminal's session, sends its
output to `<socket>.log` and serves:

- one thread per client; peers must have our uid (SO_PEERCRED);
- exits after `persist` seconds without a client, when its socket file is removed or replaced, on
  SIGTERM/`shutdown`, or when the SSH connection dropped and could not be reopened (SshTransport's
  own reconnect logic; the error goes back to the client first). It removes its socket on exit.

A client killed after its command's input was sent does not stop that command (the agent reads
the client again only after the command ends).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from aifactory_cli.errors import RemoteError
from aifactory_cli.settings import take_agent_settings
from aifactory_cli.transport import Stdin, to_shell
from aifactory_cli.transport.agent.client import (
    ABORT,
    CHUNK,
    DATA,
    END,
    ERROR,
    JSON,
    PROTOCOL,
    SETTINGS_ENV,
    FrameConn,
    PeerGone,
    ProtocolError,
    error_to_json,
    peer_uid,
    unix_address,
)
from aifactory_cli.transport.ssh import SshTransport, remote_path

LOG_LIMIT = 1024 * 1024
STOP_GRACE = 60.0  # seconds requests in flight may still take once the agent is asked to stop


class ClientAborted(Exception):
    """The client's own input writer failed; it stopped the stream."""


# --- what the server needs from the SSH side -------------------------------------------------------------


class ReadStream(Protocol):
    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class Ops(Protocol):
    """The server's view of the site (an SshTransport in real life, a fake in the protocol tests)."""

    def info(self) -> dict[str, Any]: ...

    def connect(self) -> None: ...

    def run(self, line: str, stdin: Stdin, timeout: float | None) -> tuple[int, bytes, bytes]: ...

    def put_bytes(self, data: bytes, path: str, mode: int) -> None: ...

    def open_read(self, path: str, offset: int) -> ReadStream: ...

    def tar(self, workdir: str, files: list[str], sink: Callable[[bytes], object]) -> None: ...

    def take_opened(self) -> int:
        """SSH connections opened by the calling thread since the last call."""
        ...

    def broken(self) -> bool:
        """The connection is gone and could not be reopened: the agent must go."""
        ...

    def close(self) -> None: ...


class AgentSsh(SshTransport):
    """SshTransport that counts logins per thread and remembers a failed reconnect."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._per_thread = threading.local()
        self.reconnect_failed = False

    def _open(self) -> None:
        super()._open()
        self._per_thread.opened = getattr(self._per_thread, "opened", 0) + 1

    def _reconnect(self) -> None:
        try:
            super()._reconnect()
        except BaseException:
            if self.connections_opened > 0:
                self.reconnect_failed = True
            raise

    def take_opened(self) -> int:
        n = int(getattr(self._per_thread, "opened", 0))
        self._per_thread.opened = 0
        return n


class _SftpRead:
    def __init__(self, ops: SshOps, fh: Any, path: str, empty: bool) -> None:
        self.ops, self.fh, self.path, self.empty = ops, fh, path, empty

    def __iter__(self) -> Iterator[bytes]:
        if self.empty:
            return
        while True:
            with self.ops.sftp_lock:
                try:
                    data = self.fh.read(CHUNK)
                except Exception as exc:
                    raise self.ops.ssh._sftp_error(exc, "read", self.path) from exc
            if not data:
                return
            yield data

    def close(self) -> None:
        with self.ops.sftp_lock, contextlib.suppress(Exception):
            self.fh.close()


class SshOps:
    """Ops over one AgentSsh. paramiko's SFTP client is not safe for concurrent requests from
    several threads (they would read each other's packets): every SFTP call holds `sftp_lock`,
    streams take it per chunk so that they interleave."""

    def __init__(self, ssh: AgentSsh) -> None:
        self.ssh = ssh
        self.sftp_lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {
            "username": self.ssh.username,
            "connected": self.ssh.connected,
            "agent_connections_opened": self.ssh.connections_opened,
            "agent_commands_run": self.ssh.commands_run,
        }

    def connect(self) -> None:
        self.ssh.connect()

    def run(self, line: str, stdin: Stdin, timeout: float | None) -> tuple[int, bytes, bytes]:
        out = io.BytesIO()
        rc, err = self.ssh._exec(line, stdin=stdin, timeout=timeout, stdout=out.write)
        return rc, out.getvalue(), err

    def put_bytes(self, data: bytes, path: str, mode: int) -> None:
        with self.sftp_lock:
            self.ssh.put_bytes(data, path, mode)

    def open_read(self, path: str, offset: int) -> ReadStream:
        rpath = remote_path(path)
        with self.sftp_lock:
            sftp = self.ssh._sftp_client()
            try:
                fh = sftp.open(rpath, "rb")
            except Exception as exc:
                raise self.ssh._sftp_error(exc, "read", rpath) from exc
            try:
                size = fh.stat().st_size or 0
                if offset < size:
                    fh.seek(offset)
                    fh.prefetch(size)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    fh.close()
                raise self.ssh._sftp_error(exc, "read", rpath) from exc
        return _SftpRead(self, fh, rpath, empty=offset >= size)

    def tar(self, workdir: str, files: list[str], sink: Callable[[bytes], object]) -> None:
        # as SshTransport.get_tar, into a sink instead of a local file
        line = " && ".join([to_shell(["cd", workdir]), to_shell(["tar", "-c", "-f", "-", "--", *files])])
        rc, err = self.ssh._exec(line, stdin=None, timeout=None, stdout=sink)
        if rc != 0:
            raise RemoteError(
                f"cannot pack files in {workdir} on {self.ssh.site}: "
                f"{err.decode(errors='replace').strip() or f'tar exited with {rc}'}",
                where=self.ssh.site,
            )

    def take_opened(self) -> int:
        return self.ssh.take_opened()

    def broken(self) -> bool:
        return self.ssh.reconnect_failed

    def close(self) -> None:
        self.ssh.close()


# --- the server ------------------------------------------------------------------------------------------


class _ClientStdin:
    """A command's stdin read from the client's DATA frames (the `stdin` callable of run)."""

    def __init__(self, conn: FrameConn) -> None:
        self.conn = conn
        self.started = False
        self.done = False
        self.notified = False

    def feed(self, writer: BinaryIO) -> None:
        self.started = True
        self.conn.send_json({"event": "stdin"})
        while not self.done:
            kind, data = self.conn.recv_frame()
            if kind == DATA:
                try:
                    writer.write(data)
                except BaseException:  # the command stopped reading (BrokenPipeError), timeout...
                    self.finish()
                    raise
            elif kind == END:
                self.done = True
            elif kind == ABORT:
                self.done = True
                raise ClientAborted("the client's input failed")
            else:
                raise ProtocolError(f"unexpected frame {chr(kind)!r} in a command's input")

    def finish(self) -> None:
        """Tell the client to stop sending and skip what it still sends, up to its END/ABORT."""
        if not self.started or self.done:
            return
        if not self.notified:
            self.notified = True
            self.conn.send_json({"event": "stdin-closed"})
        while not self.done:
            kind, _ = self.conn.recv_frame()
            if kind in (END, ABORT):
                self.done = True
            elif kind != DATA:
                raise ProtocolError(f"unexpected frame {chr(kind)!r} in a command's input")


class AgentServer:
    def __init__(
        self, ops: Ops, path: Path, persist: float, *, site: str = "", log: Callable[[str], None] | None = None
    ) -> None:
        self.ops = ops
        self.path = path
        self.persist = persist
        self.site = site
        self.log = log or (lambda message: None)
        self.listener: socket.socket | None = None
        self._inode: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._clients: dict[FrameConn, bool] = {}  # connection -> busy with a request
        self._threads: list[threading.Thread] = []
        self._idle_since = time.monotonic()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()  # stop() interrupts the main loop's wait
        self.stop_reason = ""

    # --- socket file -----------------------------------------------------------------------------

    def bind(self) -> None:
        """Listen on `path` (0600): bound under a temporary name, then renamed into place."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            with unix_address(tmp) as address:
                sock.bind(address)
        except BaseException:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        try:
            os.chmod(tmp, 0o600)
            sock.listen(64)
            os.replace(tmp, self.path)
            st = os.stat(self.path)
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._inode = (st.st_dev, st.st_ino)
        self.listener = sock

    def owns_socket(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._inode

    def remove_socket(self) -> None:
        if self.owns_socket():
            with contextlib.suppress(OSError):
                self.path.unlink()

    # --- main loop ----------------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            self.remove_socket()  # no new client finds a dying agent
            self._stop.set()
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")

    def serve(self) -> str:
        """Accept clients until idle for `persist` s, the socket file is gone, or stop(); returns why."""
        assert self.listener is not None
        listener = self.listener
        with self._lock:
            self._idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                interval = min(0.5, max(0.05, self.persist / 10))
                ready, _, _ = _select([listener, self._wake_r], interval)
                if listener in ready:
                    try:
                        sock, _ = listener.accept()
                    except OSError:
                        continue
                    self._accept(sock)
                with self._lock:
                    idle = not self._clients and time.monotonic() - self._idle_since >= self.persist
                if idle:
                    self.stop(f"no client for {self.persist:g} s")
                elif not self.owns_socket():
                    self.stop("its socket was removed or replaced")
        finally:
            self.stop(self.stop_reason or "stopped")
            for sock in (listener, self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    sock.close()
            self._finish_clients()
        self.log(f"exiting: {self.stop_reason}")
        return self.stop_reason

    def _accept(self, sock: socket.socket) -> None:
        try:
            uid = peer_uid(sock)
        except OSError:
            uid = -1
        if uid is not None and uid != os.getuid():
            self.log(f"refused a client with uid {uid}")
            sock.close()
            return
        conn = FrameConn(sock)
        with self._lock:
            self._clients[conn] = False
        thread = threading.Thread(target=self._serve_client, args=(conn,), daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _finish_clients(self) -> None:
        """Close idle clients at once; requests in flight get STOP_GRACE seconds to finish."""
        with self._lock:
            idle = [c for c, busy in self._clients.items() if not busy]
        for conn in idle:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + STOP_GRACE
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _serve_client(self, conn: FrameConn) -> None:
        try:
            while not self._stop.is_set():
                try:
                    kind, payload = conn.recv_frame()
                except (PeerGone, ProtocolError):
                    return
                with self._lock:
                    self._clients[conn] = True
                if kind != JSON:
                    return
                try:
                    request = json.loads(payload)
                    self._handle(conn, request if isinstance(request, dict) else {})
                except Exception as exc:  # the client went away, or spoke nonsense: drop it, and only it
                    self.log(f"client dropped: {type(exc).__name__}: {exc}")
                    return
                finally:
                    with self._lock:
                        self._clients[conn] = False
        finally:
            conn.close()
            with self._lock:
                self._clients.pop(conn, None)
                if not self._clients:
                    self._idle_since = time.monotonic()

    # --- requests ----------------------------------------------------------------------------------

    def _ok(self, **extra: Any) -> dict[str, Any]:
        return {"ok": True, "opened": self.ops.take_opened(), **extra}

    def _error_reply(self, exc: BaseException) -> dict[str, Any]:
        exiting = self.ops.broken()
        if exiting:
            self.log(f"cannot reconnect: {exc}")
            self.stop(f"lost the SSH connection and could not reopen it: {exc}")
        elif not isinstance(exc, (ClientAborted, FileNotFoundError)):
            self.log(f"request failed: {type(exc).__name__}: {exc}")
        return {"ok": False, "opened": self.ops.take_opened(), "error": error_to_json(exc), "agent_exiting": exiting}

    def _handle(self, conn: FrameConn, req: dict[str, Any]) -> None:
        op = req.get("op")
        self.ops.take_opened()
        handler = {
            "hello": self._hello,
            "connect": self._connect,
            "run": self._run,
            "put": self._put,
            "read": self._read,
            "tar": self._tar,
            "shutdown": self._shutdown,
        }.get(str(op))
        if handler is None:
            conn.send_json({"ok": False, "error": error_to_json(RemoteError(f"the agent does not know '{op}'"))})
            return
        handler(conn, req)

    def _hello(self, conn: FrameConn, req: dict[str, Any]) -> None:
        if self._stop.is_set():
            conn.send_json({"ok": False, "error": error_to_json(RemoteError("the agent is exiting"))})
            return
        persist = req.get("persist")
        if isinstance(persist, (int, float)) and persist > 0:
            self.persist = float(persist)  # the latest client's setting wins
        conn.send_json(self._ok(version=PROTOCOL, pid=os.getpid(), site=self.site, **self.ops.info()))

    def _connect(self, conn: FrameConn, req: dict[str, Any]) -> None:
        try:
            self.ops.connect()
        except (PeerGone, ProtocolError):
            raise
        except Exception as exc:
            conn.send_json(self._error_reply(exc))
            return
        conn.send_json(self._ok())

    def _run(self, conn: FrameConn, req: dict[str, Any]) -> None:
        stdin = _ClientStdin(conn) if req.get("stdin") else None
        timeout = req.get("timeout")
        try:
            rc, out, err = self.ops.run(
                str(req.get("command", "")),
                stdin.feed if stdin is not None else None,
                float(timeout) if timeout is not None else None,
            )
        except (PeerGone, ProtocolError):
            raise
        except Exception as exc:
            if stdin is not None:
                stdin.finish()
            conn.send_json(self._error_reply(exc))
            return
        if stdin is not None:
            stdin.finish()
        conn.send_json(self._ok(rc=rc))
        conn.send_data(out)
        conn.send_data(err)

    def _put(self, conn: FrameConn, req: dict[str, Any]) -> None:
        data = conn.recv_bytes()
        try:
            self.ops.put_bytes(data, str(req.get("path", "")), int(req.get("mode", 0o600)))
        except Exception as exc:
            conn.send_json(self._error_reply(exc))
            return
        conn.send_json(self._ok())

    def _read(self, conn: FrameConn, req: dict[str, Any]) -> None:
        try:
            stream = self.ops.open_read(str(req.get("path", "")), int(req.get("offset", 0)))
        except Exception as exc:
            conn.send_json(self._error_reply(exc))
            return
        try:
            conn.send_json(self._ok())
            try:
                for chunk in stream:
                    conn.send_frame(DATA, chunk)
            except (PeerGone, ProtocolError):
                raise
            except Exception as exc:
                conn.send_frame(ERROR, json.dumps(error_to_json(exc)).encode())
                return
            conn.send_frame(END)
        finally:
            stream.close()

    def _tar(self, conn: FrameConn, req: dict[str, Any]) -> None:
        started = False

        def sink(data: bytes) -> None:
            nonlocal started
            if not started:
                started = True
                conn.send_json(self._ok())
            for i in range(0, len(data), CHUNK):
                conn.send_frame(DATA, data[i : i + CHUNK])

        files = [str(f) for f in req.get("files") or []]
        try:
            self.ops.tar(str(req.get("workdir", ".")), files, sink)
        except (PeerGone, ProtocolError):
            raise
        except Exception as exc:
            if started:
                conn.send_frame(ERROR, json.dumps(error_to_json(exc)).encode())
            else:
                conn.send_json(self._error_reply(exc))
            return
        if not started:
            conn.send_json(self._ok())
        conn.send_frame(END)

    def _shutdown(self, conn: FrameConn, req: dict[str, Any]) -> None:
        self.stop("asked to stop")
        conn.send_json({"ok": True})


def _select(socks: list[socket.socket], timeout: float) -> tuple[list[Any], list[Any], list[Any]]:
    import select

    try:
        return select.select(socks, [], [], timeout)
    except InterruptedError:
        return [], [], []


# --- the process -----------------------------------------------------------------------------------------


def _settings(data: dict[str, Any]) -> Any:
    """What SshTransport reads from SshSettings, without importing pydantic (~100 ms)."""
    defaults: dict[str, Any] = {
        "host": None,
        "port": None,
        "user": None,
        "identity_file": None,
        "known_hosts": None,
        "host_key_fingerprints": [],
        "proxy_jump": None,
        "connect_timeout": 15.0,
        "notes": [],
    }
    return types.SimpleNamespace(**{**defaults, **data})


def _detach(log_path: Path) -> None:
    """Let go of the terminal: stdin from /dev/null, stdout/stderr (and the CLI's pipe) to the log."""
    with contextlib.suppress(OSError):
        if log_path.stat().st_size > LOG_LIMIT:
            log_path.unlink()
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)


def _report(message: dict[str, Any]) -> bool:
    """One JSON line to the CLI that started us (our stdout is its pipe); False: it is gone."""
    try:
        os.write(1, (json.dumps(message) + "\n").encode())
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aifactory_cli.transport.agent.server")
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--site", required=True)
    parser.add_argument("--persist", type=float, default=600.0)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--interactive", dest="interactive", action="store_true", default=False)
    mode.add_argument("--batch", dest="interactive", action="store_false")
    args = parser.parse_args(argv)
    settings = take_agent_settings()
    if not settings:
        parser.error(f"the SSH settings come as JSON in ${SETTINGS_ENV}")

    path: Path = args.socket
    log_path = path.with_suffix(".log")
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    persist = max(args.persist, 1.0)  # the CLI that started us must have time to connect
    ssh = AgentSsh(_settings(json.loads(settings)), site=args.site, interactive=args.interactive)
    ops = SshOps(ssh)
    server: AgentServer | None = None
    try:
        ssh.connect()  # prompts (MFA) still reach the user's terminal here
        ssh.interactive = False  # later reconnects cannot ask anyone
        server = AgentServer(ops, path, persist, site=args.site)
        server.bind()
    except BaseException as exc:
        ssh.close()
        if server is not None:
            server.remove_socket()
        _report({"ok": False, "error": error_to_json(exc)})
        return 1 if isinstance(exc, Exception) else 130
    with contextlib.suppress(OSError):
        os.setsid()  # out of the terminal's session: no SIGHUP/SIGINT from it any more
    if not _report({"ok": True, "pid": os.getpid(), "opened": ssh.connections_opened, "username": ssh.username}):
        server.remove_socket()
        ssh.close()
        return 1
    _detach(log_path)
    with contextlib.suppress(OSError):
        os.chdir(path.parent)

    def log(message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{stamp} agent {os.getpid()} [{args.site}]: {message}", file=sys.stderr, flush=True)

    server.log = log
    log(f"serving {path} for {ssh.route.describe()} (persist {persist:g} s)")

    def on_signal(signum: int, frame: Any) -> None:
        server.stop(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        server.serve()
    finally:
        server.remove_socket()
        ssh.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["AgentServer", "AgentSsh", "Ops", "SshOps", "main"]
