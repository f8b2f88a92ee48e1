"""The cipher aifactory offers first: AES-GCM, as OpenSSH orders it (paramiko's own first choice,
aes128-ctr with a Python HMAC per packet, made a 512 MiB fetch ~18 % slower on the bed). A server
without GCM still gets a cipher it has: nothing was removed from the offer."""

from __future__ import annotations

from pathlib import Path

import pytest

from aifactory_cli.transport.ssh.connection import SshTransport
from aifactory_cli.transport.ssh.settings import SshSettings
from tests.real.conftest import TESTBED_KEY, TESTBED_USER
from tests.real.own_sshd import own_sshd

pytestmark = pytest.mark.real


def _cipher(settings: SshSettings) -> str:
    tr = SshTransport(settings, site="ciphers")
    try:
        assert tr.run("true").rc == 0
        paramiko_transport = tr._transport  # the negotiated cipher is paramiko's to say
        assert paramiko_transport is not None
        return str(paramiko_transport.remote_cipher)
    finally:
        tr.close()


def test_the_bed_negotiates_aes_gcm(testbed_ssh_settings: SshSettings) -> None:
    assert _cipher(testbed_ssh_settings) == "aes128-gcm@openssh.com"


def test_a_server_without_gcm_negotiates_a_cipher_it_has(tmp_path: Path, isolated_ssh_env: Path) -> None:
    options = "AuthorizedKeysFile .ssh/authorized_keys\nCiphers aes256-ctr,aes128-cbc\n"
    with own_sshd(tmp_path / "sshd", options) as server:
        settings = SshSettings(
            host=server.address,
            port=server.port,
            user=TESTBED_USER,
            identity_file=str(TESTBED_KEY),
            known_hosts=str(server.known_hosts),
        )
        assert _cipher(settings) == "aes256-ctr"
