"""Keys as OpenSSH offers them, against the test bed's real sshd, each case also run with the OpenSSH
client: a key with a `<key>-cert.pub` beside it (signed by a CA the site does not trust, e.g. a
Leonardo certificate on a LUMI login) still logs in with the plain key; an encrypted key without a
terminal is refused with the hint to add it to ssh-agent (not a crash)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from aifactory_cli.errors import AuthError
from aifactory_cli.transport.ssh.connection import SshTransport
from aifactory_cli.transport.ssh.settings import SshSettings
from tests.real.conftest import TESTBED_KEY, TESTBED_KNOWN_HOSTS, TESTBED_SSH_PORT, TESTBED_USER

pytestmark = pytest.mark.real


def _copy_key(tmp_path: Path, name: str) -> Path:
    key = tmp_path / name
    shutil.copy(TESTBED_KEY, key)
    key.chmod(0o600)
    pub = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True).stdout
    key.with_name(name + ".pub").write_text(pub)
    return key


def _openssh(key: Path) -> int:
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-p", str(TESTBED_SSH_PORT), "-i", str(key), "-o", "BatchMode=yes",
         "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={TESTBED_KNOWN_HOSTS}", "-o", "IdentityAgent=none",
         f"{TESTBED_USER}@127.0.0.1", "true"],
        capture_output=True, text=True, timeout=30,
    ).returncode  # fmt: skip


def _aifactory(key: Path, settings: SshSettings) -> int | AuthError:
    tr = SshTransport(settings.model_copy(update={"identity_file": str(key)}), site="testbed", interactive=False)
    try:
        return tr.run("true").rc
    except AuthError as exc:
        return exc
    finally:
        tr.close()


def test_a_key_with_a_foreign_certificate_still_logs_in(
    tmp_path: Path, testbed_ssh_settings: SshSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # the key file alone, no agent
    key = _copy_key(tmp_path, "id_ed25519")
    ca = tmp_path / "other_ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ca)], check=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca), "-I", "leonardo", "-n", TESTBED_USER, str(key) + ".pub"], check=True
    )
    assert (tmp_path / "id_ed25519-cert.pub").is_file()
    ours, theirs = _aifactory(key, testbed_ssh_settings), _openssh(key)
    print(f"\nkey + foreign certificate: aifactory {ours!r}, OpenSSH exit {theirs}")
    assert ours == 0 and theirs == 0


def test_an_encrypted_key_without_a_terminal_says_use_the_agent(
    tmp_path: Path, testbed_ssh_settings: SshSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    key = _copy_key(tmp_path, "id_locked")
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", "s3cret", "-f", str(key)], check=True)
    ours, theirs = _aifactory(key, testbed_ssh_settings), _openssh(key)
    print(f"\nencrypted key, no terminal: aifactory {ours!r}, OpenSSH exit {theirs}")
    assert theirs == 255 and isinstance(ours, AuthError)
    assert "is encrypted and there is no terminal to ask its passphrase (add it to ssh-agent)" in str(ours) + str(
        ours.hint
    )


def test_an_encrypted_key_at_a_terminal_asks_its_passphrase(
    tmp_path: Path, testbed_ssh_settings: SshSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a terminal the passphrase is asked (once) and the key unlocks; OpenSSH gets the same
    passphrase from an askpass program (SSH_ASKPASS_REQUIRE=force)."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    key = _copy_key(tmp_path, "id_locked")
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", "s3cret", "-f", str(key)], check=True)
    asked: list[str] = []

    def typed(prompt: str, stream: object = None) -> str:
        asked.append(prompt)
        return "s3cret"

    monkeypatch.setattr("aifactory_cli.transport.ssh.auth.getpass.getpass", typed)
    tr = SshTransport(testbed_ssh_settings.model_copy(update={"identity_file": str(key)}), site="testbed",
                      interactive=True)  # fmt: skip
    try:
        ours: int | AuthError = tr.run("true").rc
    except AuthError as exc:
        ours = exc
    finally:
        tr.close()
    askpass = tmp_path / "askpass"
    askpass.write_text("#!/bin/sh\necho s3cret\n")
    askpass.chmod(0o700)
    theirs = subprocess.run(
        ["ssh", "-F", "/dev/null", "-p", str(TESTBED_SSH_PORT), "-i", str(key), "-o", "IdentitiesOnly=yes",
         "-o", f"UserKnownHostsFile={TESTBED_KNOWN_HOSTS}", "-o", "IdentityAgent=none", f"{TESTBED_USER}@127.0.0.1",
         "true"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        env={**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"},
    ).returncode  # fmt: skip
    print(f"\nencrypted key at a terminal: aifactory {ours!r} ({len(asked)} prompt), OpenSSH exit {theirs}")
    assert ours == 0 and theirs == 0 and asked == [f"Passphrase for {key}: "]
