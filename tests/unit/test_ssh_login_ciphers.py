"""The cipher order aifactory offers (tests/real/test_ciphers_real.py: what servers then pick)."""

from __future__ import annotations

import paramiko

from aifactory_cli.transport.ssh.login import aead_first


def test_gcm_comes_first_and_nothing_is_dropped() -> None:
    ours = aead_first(paramiko.Transport._preferred_ciphers)
    assert ours[:2] == ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
    assert sorted(ours) == sorted(paramiko.Transport._preferred_ciphers)
    assert aead_first(("aes128-ctr", "aes256-ctr")) == ("aes128-ctr", "aes256-ctr")  # none to move
