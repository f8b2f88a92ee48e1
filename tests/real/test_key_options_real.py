"""Two setups that worked before, kept side by side with the OpenSSH client on real OpenSSH servers
(tests/real/own_sshd.py): a key restricted in authorized_keys (`restrict`, `from=`), and
`MaxStartups 1` (one unauthenticated connection at a time). The server reads the test's
authorized_keys through `AuthorizedKeysCommand /bin/cat FILE` (a file in the test's directory would
fail StrictModes as AuthorizedKeysFile). aifactory runs a command and reads a file over SFTP."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aifactory_cli.errors import AifactoryError, AuthError
from aifactory_cli.transport.ssh.connection import SshTransport
from aifactory_cli.transport.ssh.settings import SshSettings
from tests.real.conftest import TESTBED_KEY
from tests.real.own_sshd import own_sshd

pytestmark = pytest.mark.real

PUBKEY = " ".join(TESTBED_KEY.with_suffix(".pub").read_text().split()[:2]) if TESTBED_KEY.is_file() else ""
HOSTS = ["restricted", "elsewhere", "onestartup"]


@pytest.fixture
def servers(tmp_path: Path, isolated_ssh_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Three own sshds: `restrict,from="127.0.0.1"` (our address), `from="10.9.9.9"` (not ours),
    and an unrestricted key under `MaxStartups 1`; one ssh_config naming them."""
    keys = {
        "restricted": f'restrict,from="127.0.0.1" {PUBKEY}\n',
        "elsewhere": f'from="10.9.9.9" {PUBKEY}\n',
        "onestartup": f"{PUBKEY}\n",
    }
    cfg = tmp_path / "ssh_config"
    blocks = []
    with contextlib.ExitStack() as stack:
        for i, (name, line) in enumerate(keys.items()):
            auth = tmp_path / f"authorized_keys_{name}"
            auth.write_text(line)
            options = (
                f"AuthorizedKeysFile none\nAuthorizedKeysCommand /bin/cat {auth}\nAuthorizedKeysCommandUser root\n"
                + ("MaxStartups 1\n" if name == "onestartup" else "")
            )
            server = stack.enter_context(own_sshd(tmp_path / f"sshd_{name}", options, f"127.0.0.{21 + i}"))
            blocks.append(server.ssh_config(name, TESTBED_KEY))
        cfg.write_text("".join(blocks))
        monkeypatch.setenv("AIFACTORY_SSH_CONFIG", str(cfg))
        yield cfg


def _openssh(cfg: Path, host: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    cmd = ["ssh", "-F", str(cfg), host, "echo ok"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env, stdin=subprocess.DEVNULL).returncode


def _aifactory(host: str) -> Any:
    """0 when a command runs and an SFTP read returns the file; else the error."""
    tr = SshTransport(SshSettings(host=host, connect_timeout=10), site="keyopts", interactive=False)
    try:
        r = tr.run("echo ok")
        assert r.stdout == "ok\n", r
        assert tr.read_bytes("/etc/hostname") == Path("/etc/hostname").read_bytes()
        return r.rc
    except AifactoryError as exc:
        return exc
    finally:
        tr.close()


def test_restricted_keys_and_max_startups_1_like_openssh(servers: Path) -> None:
    seen = {}
    for host in HOSTS:
        seen[host] = (_openssh(servers, host), _aifactory(host))
        print(f"\n{host:<11} OpenSSH exit {seen[host][0]:<4} aifactory {seen[host][1]!r}", end="")
    print()
    assert seen["restricted"] == (0, 0)
    assert seen["onestartup"] == (0, 0)
    theirs, ours = seen["elsewhere"]
    assert theirs == 255 and isinstance(ours, AuthError), ours
