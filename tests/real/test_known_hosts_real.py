"""known_hosts as OpenSSH reads it, against the test bed's real sshd (127.0.0.1:2222), each case
checked with the OpenSSH client on the same file: a `@cert-authority` line (for another domain, or
with a damaged key), an unknown marker and a short line do not stop the connection; `@revoked` on the
server's key refuses it, for that reason; two keys of one type for the host (a rotation, round-robin
login nodes) and a wildcard pattern are matched."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from aifactory_cli.errors import HostKeyError
from aifactory_cli.transport.ssh.connection import SshTransport
from aifactory_cli.transport.ssh.settings import SshSettings
from tests.real.conftest import TESTBED_KEY, TESTBED_KNOWN_HOSTS, TESTBED_SSH_PORT, TESTBED_USER

pytestmark = pytest.mark.real


def _server_key() -> tuple[str, str]:
    for line in TESTBED_KNOWN_HOSTS.read_text().splitlines():
        words = line.split()
        if words and words[0] == f"[127.0.0.1]:{TESTBED_SSH_PORT}":
            return words[1], words[2]
    raise AssertionError(f"no [127.0.0.1]:{TESTBED_SSH_PORT} line in {TESTBED_KNOWN_HOSTS}")


def _other_key(tmp_path: Path) -> str:
    path = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().split()[1]


def _openssh(known: Path) -> int:
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-p", str(TESTBED_SSH_PORT), "-i", str(TESTBED_KEY), "-o", "BatchMode=yes",
         "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
         "-o", "StrictHostKeyChecking=yes", f"{TESTBED_USER}@127.0.0.1", "true"],
        capture_output=True, text=True, timeout=30,
    ).returncode  # fmt: skip


def _aifactory(known: Path, testbed_ssh_settings: SshSettings) -> Any:
    tr = SshTransport(testbed_ssh_settings.model_copy(update={"known_hosts": str(known)}), site="testbed")
    try:
        return tr.run("true").rc
    except HostKeyError as exc:
        return exc
    finally:
        tr.close()


def test_known_hosts_lines_as_openssh_reads_them(tmp_path: Path, testbed_ssh_settings: SshSettings) -> None:
    key_type, key = _server_key()
    other = _other_key(tmp_path)
    here = f"[127.0.0.1]:{TESTBED_SSH_PORT}"
    cases = {
        "ca lines and junk around the key": [
            f"@cert-authority *.other.example ssh-ed25519 {other}",
            "@cert-authority *.broken.example ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ=",  # bad padding
            f"@markerwedonotknow {here} {key_type} {key}",
            "just-two words",
            f"{here} {key_type} {key}",
        ],
        "a rotation: two keys of one type": [f"{here} {key_type} {other}", f"{here} {key_type} {key}"],
        "a wildcard pattern": [f"[127.0.0.*]:{TESTBED_SSH_PORT},!nothere {key_type} {key}"],
        "revoked": [f"{here} {key_type} {key}", f"@revoked * {key_type} {key}"],
    }
    for name, lines in cases.items():
        known = tmp_path / f"{name.replace(' ', '_').replace(':', '')}.known_hosts"
        known.write_text("\n".join(lines) + "\n")
        ours, theirs = _aifactory(known, testbed_ssh_settings), _openssh(known)
        print(f"{name}: aifactory {ours!r}, OpenSSH exit {theirs}")
        if name == "revoked":
            assert isinstance(ours, HostKeyError) and "REVOKED" in ours.message and theirs == 255
        else:
            assert ours == 0 and theirs == 0, name
