"""The connection agent's server: it serves CLI commands over a Unix socket through an `Ops`, its view
of the site (in the agent process, `daemon.py`, an `SshTransport`; a fake in the protocol tests).
The client side is `client.py`, the frames `protocol.py`.

- one thread per client; peers must have our uid (SO_PEERCRED);
- exits after `persist` seconds without a client, when its socket file is removed or replaced, on
  SIGTERM/`shutdown`, or when the SSH connection dropped and could not be reopened (SshTransport's
  own reconnect logic; the error goes back to the client first). It removes its socket on exit.

A client killed after its command's input was sent does not stop that command (the agent reads
the client again only after the command ends).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from aifactory_cli.errors import RemoteError
from aifactory_cli.transport import Stdin, Tunnel
from aifactory_cli.transport.agent.protocol import (
    ABORT,
    DATA,
    END,
    ERROR,
    JSON,
    PROTOCOL,
    FrameConn,
    PeerGone,
    ProtocolError,
    error_to_json,
    peer_uid,
    unix_address,
)
from aifactory_cli.transport.agent.session import serve_session
from aifactory_cli.transport.agent.tofile import local_file, local_tar, serve_tofile
from aifactory_cli.transport.relay import SocketPipe, relay
from aifactory_cli.transport.tarstream import LocalTar

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

    def connect(self) -> dict[str, Any] | None:
        """Log in if not yet; what to add to the reply (the verified host key)."""

    def run(self, line: str, stdin: Stdin, timeout: float | None) -> tuple[int, bytes, bytes, int]:
        """(exit code, stdout, stderr, bytes of login-shell noise cut off before the output)"""
        ...

    def open_read(self, path: str, offset: int) -> ReadStream: ...

    def stream(self, line: str, sink: Callable[[bytes], object], stdin: bytes | None) -> tuple[int, bytes]:
        """Run `line` (`stdin`: its input), its stdout into `sink`: (exit code, stderr)"""
        ...

    def open_tunnel(self, host: str, port: int) -> Tunnel:
        """A byte stream to host:port from the login node, on the one connection."""
        ...

    def take_opened(self) -> int:
        """SSH connections opened by the calling thread since the last call."""
        ...

    def broken(self) -> bool:
        """The connection is gone and could not be reopened: the agent must go."""
        ...

    def close(self) -> None: ...


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
                    if self._handle(conn, request if isinstance(request, dict) else {}) is False:
                        return  # a tunnel: the connection carried its bytes, and ends with it
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

    def _handle(self, conn: FrameConn, req: dict[str, Any]) -> bool | None:
        """Serve one request; False: the connection is done (a tunnel)."""
        op = req.get("op")
        self.ops.take_opened()
        handler = {
            "hello": self._hello,
            "connect": self._connect,
            "run": self._run,
            "read": self._read,
            "tofile": lambda conn, req: serve_tofile(self, conn, req),  # run_to_file: agent/tofile.py
            "tunnel": self._tunnel,
            "shutdown": self._shutdown,
            "session": lambda conn, req: serve_session(self, conn, req),  # exec, shell: agent/session.py
        }.get(str(op))
        if handler is None:
            conn.send_json({"ok": False, "error": error_to_json(RemoteError(f"the agent does not know '{op}'"))})
            return None
        return handler(conn, req)

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
            found = self.ops.connect()
        except (PeerGone, ProtocolError):
            raise
        except Exception as exc:
            conn.send_json(self._error_reply(exc))
            return
        conn.send_json(self._ok(**(found or {})))

    def _run(self, conn: FrameConn, req: dict[str, Any]) -> None:
        stdin = _ClientStdin(conn) if req.get("stdin") else None
        timeout = req.get("timeout")
        given = req.get("stdin_file")  # the client's local file, read here (agent/tofile.py)
        # the client's tar of local files: its listing comes first, the agent reads the files (tofile.py)
        listing = conn.recv_bytes() if req.get("stdin_tar") else None
        tar: LocalTar | None = None
        try:
            feed: Callable[[BinaryIO], None] | None = stdin.feed if stdin is not None else None
            if isinstance(given, dict):
                feed = local_file(conn, given)
            elif listing is not None:
                feed, tar = local_tar(conn, listing)
            rc, out, err, noise = self.ops.run(
                str(req.get("command", "")),
                feed,
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
        written = {"stdin_sha256": tar.sha256, "stdin_changed": tar.changed} if tar is not None else {}
        conn.send_json(self._ok(rc=rc, noise=noise, **written))
        conn.send_data(out)
        conn.send_data(err)

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

    def _tunnel(self, conn: FrameConn, req: dict[str, Any]) -> bool:
        """Open the channel, say ok, then relay raw bytes until both directions end (or the agent
        stops); the client's connection ends with the tunnel."""
        try:
            channel = self.ops.open_tunnel(str(req.get("host", "")), int(req.get("port", 0)))
        except (PeerGone, ProtocolError):
            raise
        except Exception as exc:
            conn.send_json(self._error_reply(exc))
            return True
        try:
            conn.send_json(self._ok())
            relay(SocketPipe(conn.sock, conn.take_buffer()), channel, stop=self._wake_r)
        finally:
            with contextlib.suppress(Exception):
                channel.close()
        return False

    def _shutdown(self, conn: FrameConn, req: dict[str, Any]) -> None:
        self.stop("asked to stop")
        conn.send_json({"ok": True})


def _select(socks: list[socket.socket], timeout: float) -> tuple[list[Any], list[Any], list[Any]]:
    import select

    try:
        return select.select(socks, [], [], timeout)
    except InterruptedError:
        return [], [], []


__all__ = ["AgentServer", "Ops", "ReadStream"]
