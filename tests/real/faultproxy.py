"""A TCP proxy for fault tests (and bench/cut.py): forwards 127.0.0.1:<port> to a target, counting the
bytes forwarded each way, and on command freezes the server-to-client direction (holding the bytes)
or cuts every connection."""

from __future__ import annotations

import contextlib
import socket
import threading


class FaultProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self.conns: list[socket.socket] = []
        self.held = 0
        self.up = 0  # bytes forwarded client -> target
        self.down = 0  # bytes forwarded target -> client
        self.opened = 0  # connections forwarded to the target so far
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:  # the target is down (e.g. sshd restarting): the client sees the drop
                client.close()
                continue
            with self._lock:
                self.conns += [client, server]
                self.opened += 1
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if downstream and self.frozen.is_set():
                    self.held += len(data)  # the reply is swallowed: the client never sees it
                    continue
                dst.sendall(data)
                with self._lock:
                    if downstream:
                        self.down += len(data)
                    else:
                        self.up += len(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def freeze(self) -> None:
        self.frozen.set()

    def cut(self) -> None:
        """Drop every connection (both sides see a reset) and go back to forwarding."""
        with self._lock:
            for s in self.conns:
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    s.close()
            self.conns.clear()
        self.frozen.clear()

    def close(self) -> None:
        self._stop = True
        self.listener.close()
        self.cut()
