"""The connection agent process: one per site and SSH settings, it keeps one SSH connection open and
serves CLI commands over a Unix socket (`server.py`).

    AIFACTORY_AGENT_SETTINGS=JSON python -m aifactory_cli.transport.agent.daemon --socket PATH --site NAME \
        --persist SECONDS (--interactive|--batch)

Started by the CLI (`launch.py`), it logs in first, on the CLI's terminal (MFA prompts reach the
user), then writes one JSON line on stdout ("ready" or the error), leaves the terminal's session,
sends its output to `<socket>.log` and serves until the server stops.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aifactory_cli.settings import take_agent_settings
from aifactory_cli.transport import Stdin, Tunnel
from aifactory_cli.transport.agent.launch import SETTINGS_ENV
from aifactory_cli.transport.agent.protocol import error_to_json
from aifactory_cli.transport.agent.server import AgentServer, ReadStream
from aifactory_cli.transport.interactive import PtyRequest
from aifactory_cli.transport.ssh.connection import SshTransport
from aifactory_cli.transport.ssh.session import SshSession

LOG_LIMIT = 1024 * 1024


class SshOps:
    """The server's `Ops` over one SshTransport (composition: the transport's public streaming
    methods and hooks). It counts logins per thread, so that each reply says whether that request
    made the agent log in."""

    def __init__(self, settings: Any, *, site: str, interactive: bool) -> None:
        self._per_thread = threading.local()
        self.ssh = SshTransport(settings, site=site, interactive=interactive, on_login=self._logged_in)

    def _logged_in(self) -> None:
        self._per_thread.opened = getattr(self._per_thread, "opened", 0) + 1

    def info(self) -> dict[str, Any]:
        return {
            "username": self.ssh.username,
            "connected": self.ssh.connected,
            "agent_connections_opened": self.ssh.connections_opened,
            "agent_commands_run": self.ssh.commands_run,
        }

    def connect(self) -> dict[str, Any]:
        self.ssh.connect()
        return {"host_key": self.ssh.host_key()}

    def run(self, line: str, stdin: Stdin, timeout: float | None) -> tuple[int, bytes, bytes, int]:
        out = io.BytesIO()
        done = self.ssh.stream(line, stdout=out.write, stdin=stdin, timeout=timeout)
        return done.rc, out.getvalue(), done.stderr, done.noise_bytes

    def open_session(self, line: str, pty: PtyRequest | None) -> SshSession:
        return self.ssh.open_session(line, pty)

    def open_read(self, path: str, offset: int) -> ReadStream:
        return self.ssh.open_read(path, offset)

    def stream(self, line: str, sink: Callable[[bytes], object], stdin: bytes | None) -> tuple[int, bytes]:
        done = self.ssh.stream(line, stdout=sink, stdin=stdin)
        return done.rc, done.stderr

    def open_tunnel(self, host: str, port: int) -> Tunnel:
        return self.ssh.open_tunnel(host, port)

    def take_opened(self) -> int:
        n = int(getattr(self._per_thread, "opened", 0))
        self._per_thread.opened = 0
        return n

    def broken(self) -> bool:
        return self.ssh.reconnect_failed

    def close(self) -> None:
        self.ssh.close()


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
    parser = argparse.ArgumentParser(prog="python -m aifactory_cli.transport.agent.daemon")
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
    ops = SshOps(_settings(json.loads(settings)), site=args.site, interactive=args.interactive)
    ssh = ops.ssh
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


__all__ = ["SshOps", "main"]
