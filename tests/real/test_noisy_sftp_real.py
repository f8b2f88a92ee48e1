"""A login shell that prints on stdout, on a real OpenSSH server with the external sftp-server (the
shell starts it, so its output breaks the SFTP stream): OpenSSH's `sftp` fails, and aifactory's
`logs` (and `logs --follow`) give a clear error with exit 3, not a crash (exit 70); `sites check`
says how many bytes the shell printed and that file reads fail. Commands still work (markers)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.real.conftest import TESTBED_KEY, TESTBED_USER
from tests.real.own_sshd import OwnSshd, own_sshd

pytestmark = pytest.mark.real
BANNER = "Welcome to the cluster!"


@pytest.fixture
def noisy(tmp_path: Path, aif_home: Path) -> Iterator[OwnSshd]:
    shared = Path(tempfile.mkdtemp(prefix="aif-noisy-", dir="/tmp"))  # the user's shell must read it
    try:
        shared.chmod(0o755)
        wrapper = shared / "login-shell"
        wrapper.write_text(f"#!/bin/bash\necho '{BANNER}'\nexec /bin/bash -c \"$SSH_ORIGINAL_COMMAND\"\n")
        wrapper.chmod(0o755)
        options = (
            "AuthorizedKeysFile .ssh/authorized_keys\n"
            f"ForceCommand {wrapper}\nSubsystem sftp /usr/lib/openssh/sftp-server\n"
        )
        with own_sshd(tmp_path / "sshd", options) as server:
            profiles = aif_home / "profiles"
            profiles.mkdir(parents=True)
            (profiles / "noisy.yaml").write_text(
                f"extends: testbed\nssh: {{host: {server.address}, port: {server.port}, user: {TESTBED_USER}, "
                f"identity_file: {TESTBED_KEY}, known_hosts: {server.known_hosts}}}\n"
            )
            yield server
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_logs_on_a_noisy_shell_with_external_sftp_server_is_a_clear_error(
    noisy: OwnSshd, tb: Any, tmp_path: Path
) -> None:
    get = subprocess.run(
        ["sftp", "-b", "-", "-P", str(noisy.port), "-i", str(TESTBED_KEY), "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={noisy.known_hosts}", f"{TESTBED_USER}@{noisy.address}"],
        input="get /etc/hostname /dev/null\n", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    print(f"\nOpenSSH sftp: exit {get.returncode}: {get.stderr.strip()[:120]}")
    assert get.returncode != 0  # OpenSSH cannot use SFTP there either

    spec = tmp_path / "hello.yaml"
    spec.write_text("name: hello\nrun: echo hello\n")
    sub = tb("submit", str(spec), "--site", "noisy", "--wait", env={"AIFACTORY_PERSIST": "0"})
    assert sub.code == 0, sub.stderr  # commands work: the banner is cut at the markers
    listing = json.loads(tb("list", "--json").stdout)["jobs"]
    job = listing[0]["id"]
    for args in (["logs", job], ["logs", job, "--follow"]):
        r = tb(*args, env={"AIFACTORY_PERSIST": "0"}, timeout=60)
        print(f"aifactory {' '.join(args[:1] + args[2:])}: exit {r.code}: {r.stderr.strip()[:200]}")
        assert r.code == 3, r.stderr
        assert "SFTP" in r.stderr and "[[ $- == *i* ]]" in r.stderr and "Traceback" not in r.stderr

    check = tb("sites", "check", "noisy", "--json", env={"AIFACTORY_PERSIST": "0"})
    rows = {c["check"]: c for c in json.loads(check.stdout)["checks"]}
    assert rows["connect"]["status"] == "ok"
    assert rows["login shell"]["status"] == "warn"
    assert rows["login shell"]["detail"].startswith(f"{len(BANNER) + 1} bytes of banner"), rows["login shell"]
    assert rows["file reads (SFTP)"]["status"] == "fail"
