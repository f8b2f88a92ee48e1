"""A login node's `MaxSessions` (sessions per SSH connection; OpenSSH's default is 10), with a real
OpenSSH sshd: a second sshd on the bed's login node, from the bed's own sshd_config with its own
port and `MaxSessions 2`. Open shells (`aifactory shell`, `exec`) are sessions of the one
connection: when the limit is reached, the next command is refused with a clear error, and the
connection is NOT dropped and reopened (that would cost a login, an MFA prompt, and end every shell
still open on it)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aifactory_cli.errors import RemoteError
from aifactory_cli.sites.profile import SshSettings
from aifactory_cli.transport.interactive import EXIT
from aifactory_cli.transport.ssh.connection import SshTransport
from tests.real.conftest import TESTBED_DIR, TESTBED_KNOWN_HOSTS

pytestmark = pytest.mark.real

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def limited(testbed_ssh_settings: SshSettings, tmp_path: Path) -> Iterator[SshSettings]:
    """SSH settings for a private sshd with MaxSessions 2 (the bed's config otherwise)."""
    base = (TESTBED_DIR / "ssh" / "sshd_config").read_text()
    port = free_port()
    text = re.sub(r"(?m)^Port .*$", f"Port {port}", base)
    text = re.sub(r"(?m)^PidFile .*$", f"PidFile {tmp_path / 'sshd.pid'}", text)
    text = re.sub(r"(?m)^MaxSessions .*$", "MaxSessions 2", text)
    assert f"Port {port}" in text and "MaxSessions 2" in text
    config = tmp_path / "sshd_config"
    config.write_text(text)
    hosts = tmp_path / "known_hosts"
    hosts.write_text(TESTBED_KNOWN_HOSTS.read_text().replace("[127.0.0.1]:2222", f"[127.0.0.1]:{port}"))
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "the private sshd did not start"
            time.sleep(0.1)
        yield testbed_ssh_settings.model_copy(update={"port": port, "known_hosts": str(hosts)})
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_session_limit_refuses_clearly_and_keeps_the_connection(limited: SshSettings) -> None:
    with SshTransport(limited, site="limited", interactive=False) as tr:
        assert tr.run("echo one").stdout == "one\n"
        shells = [tr.open_session("read line; echo got $line"), tr.open_session("read line; echo got $line")]
        with pytest.raises(RemoteError) as refused:
            tr.run("echo three")
        error = refused.value
        assert "refused one more session" in error.message and "MaxSessions" in (error.hint or ""), error
        assert error.exit_code == 3
        assert tr.connections_opened == 1  # no second login
        for i, shell in enumerate(shells):  # the open sessions still work
            shell.send(f"s{i}\n".encode())
            events: list = []
            deadline = time.monotonic() + 10
            while not any(kind == EXIT for kind, _ in events) and time.monotonic() < deadline:
                events += shell.events()
                time.sleep(0.05)
            assert b"".join(v for k, v in events if isinstance(v, bytes)) == f"got s{i}\n".encode()
            assert (EXIT, 0) in events
            shell.close()
        deadline = time.monotonic() + 10
        while True:  # the server frees the sessions as the channels close
            try:
                assert tr.run("echo four").stdout == "four\n"
                break
            except RemoteError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert tr.connections_opened == 1
