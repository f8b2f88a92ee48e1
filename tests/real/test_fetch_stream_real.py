"""A large fetch over the real sshd of the test bed: streamed at line speed with no stall between
received chunks, and the right bytes (sha256 as the site computes it, and the stream's digest there
the one of what arrived)."""

from __future__ import annotations

import hashlib
import itertools
import secrets
import tarfile
import time
from pathlib import Path

import pytest

from aifactory_cli.transport.ssh.connection import SshTransport
from aifactory_cli.transport.ssh.settings import SshSettings

pytestmark = pytest.mark.real

SIZE = 256 * 1024 * 1024


def test_a_256_mib_fetch_streams_without_a_stall_and_arrives_intact(
    testbed_ssh_settings: SshSettings, tmp_path: Path
) -> None:
    workdir = f"aif-fetch-test-{secrets.token_hex(4)}"
    with SshTransport(testbed_ssh_settings, site="bed", interactive=False) as ssh:
        made = ssh.run(
            f"mkdir -p {workdir} && head -c {SIZE} /dev/urandom > {workdir}/big.bin && sha256sum {workdir}/big.bin"
        )
        assert made.ok, made.stderr
        remote_sum = made.stdout.split()[0]
        try:
            stamps: list[float] = []
            got = [0]

            def progress(n: int) -> None:
                stamps.append(time.monotonic())
                got[0] += n

            started = time.monotonic()
            whole = ssh.get_tar(workdir, ["big.bin"], tmp_path / "fetch.tar", progress)
            seconds = time.monotonic() - started
        finally:
            ssh.run(["rm", "-rf", workdir])
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    with tarfile.open(tmp_path / "fetch.tar") as tar:
        member = tar.extractfile("big.bin")
        assert member is not None
        digest = hashlib.sha256()
        while chunk := member.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == remote_sum
    assert whole is True  # the site's digest of the stream is the one of what arrived: nothing to check per file
    assert got[0] >= SIZE and max(gaps) < 2.0, f"longest gap {max(gaps):.2f} s in {seconds:.1f} s"
