"""Byte pumps for forwarded ports: a local socket <-> a `Tunnel` (an SSH channel, a stream through the
connection agent, another socket), both directions in one thread with `select`, half-closes passed on.
Standard library only: the connection agent's client and server use it too."""

from __future__ import annotations

import contextlib
import select
import socket
from typing import Any, Protocol

CHUNK = 64 * 1024


class Pipe(Protocol):
    def fileno(self) -> int: ...

    def recv(self, size: int) -> bytes: ...

    def sendall(self, data: bytes) -> None: ...

    def shutdown_write(self) -> None: ...

    def close(self) -> None: ...


class SocketPipe:
    """A socket as a `Tunnel`/`Pipe`; `pending` are bytes already read from it (handed over first)."""

    def __init__(self, sock: socket.socket, pending: bytes = b"") -> None:
        self.sock = sock
        self.pending = pending

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self, size: int) -> bytes:
        if self.pending:
            data, self.pending = self.pending[:size], self.pending[size:]
            return data
        return self.sock.recv(size)

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        # shutdown first: a copy of the descriptor in a forked child must not keep the peer waiting
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


def relay(a: Pipe, b: Pipe, stop: socket.socket | None = None) -> tuple[int, int]:
    """Copy bytes both ways until both directions ended (EOF, or an error on either side), or `stop`
    (a socket) becomes readable. Returns (bytes a->b, bytes b->a). Closes neither side."""
    counts = [0, 0]
    open_from = {0: a, 1: b}  # directions still copying: 0 = a->b, 1 = b->a
    peers = {0: b, 1: a}
    while open_from:
        watched: list[Any] = list(open_from.values())
        pending = [d for d, p in open_from.items() if getattr(p, "pending", b"")]
        if stop is not None:
            watched.append(stop)
        if pending:
            ready: list[Any] = [open_from[d] for d in pending]
        else:
            try:
                ready, _, _ = select.select(watched, [], [], 1.0)
            except (OSError, ValueError):
                return counts[0], counts[1]
        if stop is not None and stop in ready:
            return counts[0], counts[1]
        for direction, source in list(open_from.items()):
            if source not in ready:
                continue
            try:
                data = source.recv(CHUNK)
            except OSError:
                data = b""
            if data:
                try:
                    peers[direction].sendall(data)
                    counts[direction] += len(data)
                    continue
                except OSError:
                    return counts[0], counts[1]  # the receiving side is gone: nothing more to do
            del open_from[direction]
            peers[direction].shutdown_write()
    return counts[0], counts[1]
