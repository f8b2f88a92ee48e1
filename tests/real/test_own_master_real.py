"""aifactory's own OpenSSH master (transport/ssh/ownmaster.py) on real OpenSSH servers of the test's
own (tests/real/own_sshd.py, whose LogLevel VERBOSE log counts the TCP connections):

- no ControlMaster of the user's: a spec's 65 MiB `data:` file goes up and a 66 MiB output comes
  back through a master that aifactory starts (one login more per command, keys only), the CLI
  says so, the sha256 match, and no master process nor its private dir is left after either
  command. With the profile's pinned fingerprint and no known_hosts entry anywhere, OpenSSH takes
  the key that aifactory's connection verified. With AIFACTORY_OPENSSH_MUX=0 nothing of it.
- a site that wants an MFA code after the key (PAM, as in test_mfa_openssh_real.py): the master's
  login is refused without a prompt, paramiko carries the data, the user types the code once; the
  refusal is remembered, and the next submit does not try again."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.real.bedjobs import bed_env, data_round
from tests.real.conftest import TESTBED_ACCOUNT, TESTBED_CLIENT, TESTBED_KEY, TESTBED_USER
from tests.real.own_sshd import own_sshd
from tests.real.test_agent import agent_pids
from tests.real.test_mfa_openssh_real import CODE, _at_terminal, mfa_sshd

pytestmark = pytest.mark.real

SCRATCH = Path(f"/scratch/{TESTBED_ACCOUNT}/{TESTBED_USER}")
UP = 65 * 1024 * 1024  # over ownmaster.MIN_BYTES (64 MiB)
DOWN = 66 * 1024 * 1024  # over fetch's LARGE and MIN_BYTES
VIA = "an OpenSSH master of aifactory's own"


def _masters(tmpdir: Path) -> list[str]:
    """The command lines of live ssh processes whose control socket is under `tmpdir`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if str(tmpdir) in cmd and "-M" in cmd.split():
                    found.append(cmd)
    return found


def _round(env: dict[str, str], tmp: Path, tag: str, site: str) -> tuple[str, dict, dict]:
    return data_round(env, tmp, tag, site, UP, DOWN)


def test_large_data_and_fetch_go_through_an_own_master_that_is_gone_after_each_command(tmp_path: Path) -> None:
    store = SCRATCH / f"aif-own-test-{secrets.token_hex(4)}"
    tmpdir = Path(tempfile.mkdtemp(prefix="aifom-", dir="/tmp"))  # the masters' dirs (a socket path stays short)
    with own_sshd(tmp_path / "sshd", "AuthorizedKeysFile .ssh/authorized_keys\n") as server:
        cfg = tmp_path / "ssh_config"
        block = server.ssh_config("ownbed", TESTBED_KEY)
        empty = tmp_path / "known_hosts_empty"
        empty.write_text("")
        cfg.write_text(
            block + "\n" + block.replace("Host ownbed", "Host ownpin").replace(str(server.known_hosts), str(empty))
        )
        env = bed_env(tmp_path)
        env.update(AIFACTORY_ACCOUNT=TESTBED_ACCOUNT, AIFACTORY_SSH_CONFIG=str(cfg), TMPDIR=str(tmpdir))
        pin = (TESTBED_CLIENT / "host_fingerprint").read_text().strip()  # the own sshd has the bed's host key
        profiles = tmp_path / "profiles"
        profiles.mkdir()
        (profiles / "ownb.yaml").write_text(
            f"extends: lumi-bed\ndata_dir: {store}\nssh: {{host: ownbed, known_hosts: {server.known_hosts}}}\n"
        )
        (profiles / "ownpin.yaml").write_text(
            f"extends: lumi-bed\ndata_dir: {store}\n"
            f"ssh: {{host: ownpin, known_hosts: {empty}, host_key_fingerprints: ['{pin}']}}\n"
        )
        env["AIFACTORY_PROFILES"] = f"{profiles}{os.pathsep}{env['AIFACTORY_PROFILES']}"
        try:
            # 1. paramiko only (the switch): the baseline count of logins
            before = server.connections()
            stderr, job, fetched = _round({**env, "AIFACTORY_OPENSSH_MUX": "0"}, tmp_path, "a", "ownb")
            assert "OpenSSH" not in stderr and job["data"].get("via") is None and fetched["via"] is None
            plain = server.connections() - before

            # 2. known_hosts: through a master of aifactory's own, one login more per command
            before = server.connections()
            stderr, job, fetched = _round(env, tmp_path, "b", "ownb")
            assert f"; via {VIA}" in stderr, stderr
            assert job["data"]["via"].startswith(VIA) and fetched["via"].startswith(VIA), (job["data"], fetched)
            own = server.connections() - before
            assert not _masters(tmpdir) and not list(tmpdir.iterdir())  # stopped, its dir removed

            # 3. pins only: OpenSSH alone would refuse this host (no known_hosts entry), and takes the
            # key that aifactory's connection checked against the pin
            stderr, job, fetched = _round(env, tmp_path, "c", "ownpin")
            assert job["data"]["via"].startswith(VIA) and fetched["via"].startswith(VIA), stderr
            assert not _masters(tmpdir) and not list(tmpdir.iterdir())
            print(f"\nlogins: {plain} over paramiko only, {own} with an own master per command")
            assert own == plain + 2, server.log.read_text()[-3000:]  # the submit's master, the fetch's
            refused = subprocess.run(
                ["ssh", "-F", str(cfg), "ownpin", "true"], capture_output=True, text=True, stdin=subprocess.DEVNULL
            )
            assert refused.returncode == 255 and "Host key verification failed" in refused.stderr, refused.stderr
        finally:
            for cmd in _masters(tmpdir):
                print("left over:", cmd)
            subprocess.run(["pkill", "-f", str(tmpdir)], check=False)
            shutil.rmtree(tmpdir, ignore_errors=True)
            subprocess.run(["chmod", "-R", "u+w", str(store)], check=False, capture_output=True)
            shutil.rmtree(store, ignore_errors=True)


def test_an_mfa_site_refuses_the_own_master_without_a_prompt_once_and_paramiko_carries_the_data(
    tmp_path: Path, aif_home: Path, isolated_ssh_env: Path
) -> None:
    store = SCRATCH / f"aif-own-mfa-{secrets.token_hex(4)}"
    tmpdir = Path(tempfile.mkdtemp(prefix="aifom-", dir="/tmp"))
    with mfa_sshd(tmp_path / "mfa") as server:
        cfg = tmp_path / "ssh_config"
        cfg.write_text(server.ssh_config("mfabed", TESTBED_KEY, batch=False))
        profiles = aif_home / "profiles"
        profiles.mkdir(parents=True)
        (profiles / "mfaown.yaml").write_text(
            f"extends: lumi-bed\ndata_dir: {store}\nssh: {{host: mfabed, known_hosts: {server.known_hosts}}}\n"
        )
        env = {
            "AIFACTORY_ACCOUNT": TESTBED_ACCOUNT,
            "AIFACTORY_PERSIST": "0",
            "AIFACTORY_SSH_CONFIG": str(cfg),
            "AIFACTORY_PROFILES": f"{profiles}{os.pathsep}{bed_env(tmp_path)['AIFACTORY_PROFILES']}",
            "TMPDIR": str(tmpdir),
            "NO_COLOR": "1",
        }
        try:
            outs = []
            for tag in ("a", "b"):
                root = tmp_path / tag
                root.mkdir()
                (root / "big.bin").write_bytes(os.urandom(UP))
                spec = root / "job.yaml"
                spec.write_text(f"name: mfa{tag}\nresources: {{time: 5m}}\ndata: [big.bin]\nrun: 'true'\n")
                before = server.connections()
                rc, out, prompts = _at_terminal(["submit", str(spec), "--site", "mfaown"], env, CODE, timeout=120)
                outs.append((rc, out, prompts, server.connections() - before))
            seen = [(o[0], o[2], o[3]) for o in outs]
            print(f"\nMFA site, two submits of 65 MiB: (exit, code prompts, logins) {seen}")
            for rc, out, prompts, _ in outs:
                assert rc == 0 and prompts == 1, out + server.log.read_text()[-2000:]
                assert "1 sent (68.2 MB" in out and "OpenSSH" not in out, out
            # the first: aifactory's login and the refused master; the second: aifactory's only
            assert [o[3] for o in outs] == [2, 1], server.log.read_text()[-3000:]
            (marker,) = (aif_home / "state" / "ssh").glob("openssh-refused-*")
            assert "Permission denied" in marker.read_text()
            assert not _masters(tmpdir) and not list(tmpdir.iterdir())
        finally:
            for pid in agent_pids(aif_home):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            shutil.rmtree(tmpdir, ignore_errors=True)
            subprocess.run(["chmod", "-R", "u+w", str(store)], check=False, capture_output=True)
            shutil.rmtree(store, ignore_errors=True)
