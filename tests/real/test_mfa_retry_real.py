"""A mistyped MFA code at a terminal gets another try on the same connection, up to
NumberOfPasswordPrompts (3 by default, as OpenSSH), and a refused code is reported as a refused
code, not as a refused key. Against the paramiko login node of tests/real/fake_sshd.py (key, then
a keyboard-interactive 'Verification code' that must be 123456); the answers are typed by
replacing getpass."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aifactory_cli.errors import AuthError
from aifactory_cli.transport.ssh.connection import SshTransport
from tests.real.fake_sshd import FakeServer

pytestmark = pytest.mark.real


@pytest.fixture
def mfa_node(tmp_path: Path, isolated_ssh_env: Path) -> Iterator[FakeServer]:
    server = FakeServer(tmp_path, mfa=True)
    yield server
    server.stop()


def _typed(monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> list[str]:
    asked: list[str] = []

    def getpass(prompt: str, stream: object = None) -> str:
        asked.append(prompt)
        return answers.pop(0)

    monkeypatch.setattr("aifactory_cli.transport.ssh.auth.getpass.getpass", getpass)
    return asked


def test_a_mistyped_code_gets_another_try_on_the_same_connection(
    mfa_node: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = _typed(monkeypatch, ["111111", "222222", "123456"])
    with SshTransport(mfa_node.settings, site="fake", interactive=True) as tr:
        assert tr.run("true").rc == 0
    print(f"\n2 wrong codes then the right one: {len(asked)} prompts, {mfa_node.logins} login(s)")
    assert len(asked) == 3 and mfa_node.logins == 1


def test_three_wrong_codes_blame_the_code_not_the_key(mfa_node: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _typed(monkeypatch, ["1", "2", "3", "4"])
    tr = SshTransport(mfa_node.settings, site="fake", interactive=True)
    with pytest.raises(AuthError) as info:
        tr.run("true")
    tr.close()
    print(f"3 wrong codes: {len(asked)} prompts; {info.value.message}")
    assert len(asked) == 3 and mfa_node.logins == 1
    assert "accepted the key" in info.value.message and "refused the answer" in info.value.message
    assert "the key" not in (info.value.hint or "")
