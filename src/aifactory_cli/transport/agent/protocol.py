"""The connection agent's wire protocol: frames over a Unix stream socket, errors carried across it,
and the socket's address.

One request at a time per connection (a CLI process keeps a small pool of connections). Every frame
is `struct ">BI"` (kind, payload length) then the payload:

- `J` a JSON object; `D` a chunk of binary data (at most `CHUNK` bytes); `E` end of a data stream;
  `A` the client aborts the stream it was sending; `X` a data stream ends with an error (JSON).
- requests: `hello` (version, persist) · `connect` · `run` (command line, timeout, stdin: bool;
  or `stdin_file`, or `stdin_tar`: the agent reads the local files itself, agent/tofile.py) ·
  `read` (path, offset) · `tofile` (agent/tofile.py) · `session` (an interactive command, session.py) ·
  `tunnel` (host, port) · `shutdown`.
- `tunnel`: the agent opens a direct-tcpip channel from the login node to host:port on its one SSH
  connection (`aifactory forward`: no login per forwarded connection); after its `ok` reply the
  socket carries the channel's raw bytes both ways, no more frames, until either side closes it
  (a half-close passes through); such a connection is never used for another request.
- replies: `{"ok": true, "opened": n, ...}` or `{"ok": false, "error": {...}, "agent_exiting": bool}`;
  `opened` counts the SSH connections the request made the agent open. `read` replies are
  followed by a data stream (which may end in `X`), `run` replies (`rc`, `noise`: the bytes the
  login shell printed before the command) by stdout then stderr streams.
- stdin of `run`: the agent answers `{"event": "stdin"}` once the remote command has started (so an
  error before that, e.g. a failed reconnect, arrives without any input sent); the client then
  streams its writer's output; `{"event": "stdin-closed"}` from the agent means the remote command
  stopped reading (the client's writer gets BrokenPipeError, as with SshTransport). Nothing is
  buffered whole on either side.
- errors carry the class name, message, hint and `where`; the client re-raises the same class from
  `aifactory_cli.errors` (or FileNotFoundError). `agent_exiting` means the agent could not
  reconnect and is going away: the client starts a fresh agent (which may prompt on its terminal)
  and retries once when nothing was sent yet.

Standard library only (the client must not import paramiko or pydantic).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aifactory_cli import errors as _errors
from aifactory_cli.errors import AifactoryError, RemoteError

PROTOCOL = 6  # 2: no `put`; `run` replies carry `noise`; 3: `session` and `tunnel`; 4: `tofile` for `tar`;
# 5: `run` with `stdin_tar` (the request, then the tar's listing as a data stream; agent/tofile.py);
# 6: a tar listing's file records carry the sha256 expected, its `run` reply `stdin_sha256` and `stdin_changed`
CHUNK = 256 * 1024
MAX_FRAME = 16 * 1024 * 1024
HEADER = struct.Struct(">BI")
JSON, DATA, END, ABORT, ERROR = (ord(c) for c in "JDEAX")
HELLO_TIMEOUT = 10.0
MAX_SUN_PATH = 100  # sockaddr_un.sun_path is 108 bytes on Linux, 104 on macOS


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

    def take_buffer(self) -> bytes:
        """Bytes read from the socket beyond the last frame (a tunnel's first bytes), handed over."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

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
    if kind == "LocalOSError":  # the agent writing a local file (agent/tofile.py): the same OSError subclass
        return OSError(error.get("errno") or errno.EIO, error.get("strerror") or "", error.get("filename"))
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


# --- the socket's address -----------------------------------------------------------------------------


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
