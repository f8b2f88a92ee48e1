"""The connection agent's `tunnel` request without SSH: the server side in this process on a fake
site whose tunnels are sockets to a local echo server; the client is the real `AgentTransport`.
A tunnel is a connection of its own to the agent, raw bytes after the reply, never pooled again;
a refusal comes back as the same error class, and that connection stays usable."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from test_agent_protocol import FakeOps, client, home, serving, sock_path  # noqa: F401 - fixtures
from test_forward import echo_server

from aifactory_cli.errors import EXIT_REMOTE, TunnelRefused
from aifactory_cli.transport.relay import SocketPipe, relay


class TunnelOps(FakeOps):
    def __init__(self) -> None:
        super().__init__()
        self.tunnels: list[tuple[str, int]] = []

    def open_tunnel(self, host: str, port: int) -> Any:
        self._login()
        self.tunnels.append((host, port))
        try:
            return SocketPipe(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError as exc:
            raise TunnelRefused(f"the login node could not connect to {host}:{port}: refused", where="fake") from exc


def _through(tunnel: Any, payload: bytes) -> bytes:
    """A local client -> relay -> the agent's tunnel: what `forward` does with each connection."""
    left, right = socket.socketpair()
    pump = threading.Thread(target=relay, args=(SocketPipe(right), tunnel), daemon=True)
    pump.start()
    left.sendall(payload)
    left.shutdown(socket.SHUT_WR)
    reply = b""
    while chunk := left.recv(65536):
        reply += chunk
    pump.join(5)
    left.close()
    return reply


def test_tunnels_carry_raw_bytes_on_the_agents_one_login(sock_path: Path) -> None:  # noqa: F811
    ops = TunnelOps()
    with echo_server() as port, serving(ops, sock_path):
        tr = client(sock_path)
        assert tr.run("echo 0 hi -").stdout == "hi"
        pooled = len(tr._pool)
        big = bytes(range(256)) * 8192
        assert _through(tr.open_tunnel("nid005000", port), big) == b"echo:" + big
        replies: list[bytes] = []
        threads = [
            threading.Thread(target=lambda i=i: replies.append(_through(tr.open_tunnel("nid005000", port), b"%d" % i)))
            for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(replies) == sorted(b"echo:%d" % i for i in range(8))
        assert pooled == 1 and tr._pool == []  # a tunnel's connection is never pooled again
        assert tr.run("echo 0 after -").stdout == "after"  # requests still work beside them
        tr.close()
    assert ops.tunnels == [("nid005000", port)] * 9 and ops.opened_total == 1


def test_a_refused_tunnel_is_the_same_error_and_the_connection_is_reused(sock_path: Path) -> None:  # noqa: F811
    ops = TunnelOps()
    with socket.socket() as bound, serving(ops, sock_path):
        bound.bind(("127.0.0.1", 0))  # not listening: refused
        port = bound.getsockname()[1]
        tr = client(sock_path)
        with pytest.raises(TunnelRefused, match=f"nid005000:{port}") as info:
            tr.open_tunnel("nid005000", port)
        assert info.value.exit_code == EXIT_REMOTE and info.value.where == "fake"
        assert len(tr._pool) == 1  # a complete error reply: the connection is in step, back in the pool
        assert tr.run("echo 0 ok -").stdout == "ok"
        tr.close()


def test_stopping_the_agent_ends_its_tunnels(sock_path: Path) -> None:  # noqa: F811
    ops = TunnelOps()
    with echo_server() as port:
        with serving(ops, sock_path) as server:
            tunnel = client(sock_path).open_tunnel("nid005000", port)
            tunnel.sendall(b"half")  # the echo server waits for EOF: the tunnel stays open
            server.stop("test over")
        # the agent closed it (and serving() checked that its thread ended); closed with bytes unread,
        # it may come as a reset
        with contextlib.suppress(ConnectionResetError):
            assert tunnel.recv(100) == b""
        tunnel.close()
