"""Where a site's connection agent lives and how the CLI starts it.

- The socket is `state_dir()/agents/<site>-<hash>.sock` (dir 0700, socket 0600); the hash covers the
  SSH settings, the ssh_config file's content (not files it includes), the user, the machine and
  the package/protocol version, so a changed setting gets a new agent (the old one exits when idle).
- `spawn_agent` runs `python -m aifactory_cli.transport.agent.daemon`. The agent logs in first, while
  it still shares the CLI's terminal (stdin and stderr, so keyboard-interactive/MFA prompts reach the
  user), reports "ready" or the error on a pipe, then leaves the terminal's session and serves the
  socket, logging to `<name>.log`. A failed login leaves no agent behind and raises the same error
  as `SshTransport`.

Standard library only (the CLI side must not import paramiko or pydantic).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aifactory_cli import settings as app_settings
from aifactory_cli.errors import RemoteError
from aifactory_cli.paths import state_dir
from aifactory_cli.transport.agent.protocol import PROTOCOL, error_from_json

if TYPE_CHECKING:
    from aifactory_cli.transport.ssh.settings import SshSettings

SSH_CONFIG_ENV = app_settings.SSH_CONFIG
AGENT_MODULE = "aifactory_cli.transport.agent.daemon"
SETTINGS_ENV = app_settings.AGENT_SETTINGS  # how the CLI hands the SSH settings to the agent it starts


def agents_dir() -> Path:
    return state_dir() / "agents"


def _ssh_config_path() -> Path:
    return app_settings.current().ssh_config_file()


def _absolute(path: str | None) -> str | None:
    """A relative path made absolute against the CLI's cwd (the agent runs elsewhere)."""
    if not path or path.startswith(("~", "$")) or os.path.isabs(path):
        return path
    return os.path.abspath(path)


def settings_json(settings: SshSettings) -> dict[str, Any]:
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
        "settings": settings_json(settings),
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


def stdin_isatty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        return False


def spawn_agent(
    settings: SshSettings, *, site: str, socket_path: Path, persist: float, interactive: bool
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start the agent for `socket_path`; it logs in (prompting on our terminal if needed) before it
    reports. Returns the process and its "ready" message; a failed login raises its error."""
    log_path = socket_path.with_suffix(".log")
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
        str(socket_path),
        "--site",
        site,
        "--persist",
        repr(float(persist)),
        "--interactive" if interactive else "--batch",
    ]
    env[SETTINGS_ENV] = json.dumps(settings_json(settings), separators=(",", ":"))  # not in `ps`
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
            f"cannot start the connection agent for {site}: {exc}",
            "set AIFACTORY_PERSIST=0 (or ssh.persist: 0) to connect without an agent",
            where=site,
        ) from exc
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
    except BaseException:  # Ctrl-C during an MFA prompt...
        terminate(proc)
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
            terminate(proc)
            rc = proc.returncode
        if isinstance(msg, dict) and isinstance(msg.get("error"), dict):
            raise error_from_json(msg["error"], site, log_path)
        raise RemoteError(
            f"the connection agent for {site} exited (status {rc}) before it was ready",
            "its messages are above; set AIFACTORY_PERSIST=0 (or ssh.persist: 0) to connect without an agent",
            where=site,
        )
    return proc, msg


def terminate(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        proc.terminate()
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()
