"""`MaxSessions 1` (a site limit on channels per connection): `submit --wait --follow` of a short
job logs in once, with and without the connection agent. The server is an sshd of the test's own
(tests/real/own_sshd.py) in front of the bed's Slurm; its LogLevel VERBOSE log counts the TCP
connections ("Connection from")."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.real.conftest import TESTBED_KEY, TESTBED_USER
from tests.real.own_sshd import own_sshd
from tests.real.test_agent import agent_pids

pytestmark = pytest.mark.real


@pytest.fixture
def limited(tmp_path: Path, aif_home: Path) -> Any:
    with own_sshd(tmp_path / "sshd", "MaxSessions 1\nAuthorizedKeysFile .ssh/authorized_keys\n") as server:
        profiles = aif_home / "profiles"
        profiles.mkdir(parents=True)
        (profiles / "onesession.yaml").write_text(
            f"extends: testbed\nssh: {{host: {server.address}, port: {server.port}, user: {TESTBED_USER}, "
            f"identity_file: {TESTBED_KEY}, known_hosts: {server.known_hosts}}}\n"
        )
        yield server
    for pid in agent_pids(aif_home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


@pytest.mark.parametrize("persist", ["0", "60"])
def test_submit_wait_follow_logs_in_once_under_max_sessions_1(
    limited: Any, tb: Any, tmp_path: Path, persist: str
) -> None:
    spec = tmp_path / "short.yaml"
    spec.write_text("name: short\nrun: for i in 1 2 3 4; do echo line $i; sleep 1; done\n")
    started = time.monotonic()
    r = tb("submit", str(spec), "--site", "onesession", "--wait", "--follow", env={"AIFACTORY_PERSIST": persist})
    took = time.monotonic() - started
    logins = limited.connections()
    print(f"\nMaxSessions 1, AIFACTORY_PERSIST={persist}: {logins} login(s) in {took:.1f} s, exit {r.code}")
    assert r.code == 0, r.stdout + r.stderr
    followed = [line for line in r.stderr.splitlines() if line.startswith("line ")]  # --follow: on stderr
    assert followed == [f"line {i}" for i in range(1, 5)], r.stderr
    assert logins == 1, limited.log.read_text()[-3000:]


def test_two_commands_at_once_share_the_agents_one_connection(limited: Any, tb: Any, tmp_path: Path) -> None:
    """`logs --follow` and `wait` of the same job at the same time, through one agent: its threads
    take turns on the one channel the server allows, still one login."""
    from concurrent.futures import ThreadPoolExecutor

    spec = tmp_path / "short.yaml"
    spec.write_text("name: short\nrun: for i in 1 2 3; do echo line $i; sleep 1; done\n")
    env = {"AIFACTORY_PERSIST": "60"}
    sub = tb("submit", str(spec), "--site", "onesession", env=env)
    assert sub.code == 0, sub.stderr
    job = sub.stdout.strip()
    with ThreadPoolExecutor(2) as pool:
        follow = pool.submit(tb, "logs", job, "--follow", env=env, timeout=90)
        wait = pool.submit(tb, "wait", job, env=env, timeout=90)
        follow_r, wait_r = follow.result(), wait.result()
    logins = limited.connections()
    print(f"\nMaxSessions 1, logs --follow + wait at once through the agent: {logins} login(s)")
    assert follow_r.code == 0 and wait_r.code == 0, follow_r.stderr + wait_r.stderr
    assert follow_r.stdout.splitlines() == ["line 1", "line 2", "line 3"], follow_r.stdout
    assert logins == 1, limited.log.read_text()[-3000:]


def test_openssh_with_controlmaster_logs_in_once_too(limited: Any, tmp_path: Path) -> None:
    """The yardstick: the OpenSSH client with ControlMaster, three commands one after another on the
    same server: 1 login, as aifactory above."""
    import tempfile

    short = tempfile.mkdtemp(prefix="aifcm")  # a socket path must be short (108 bytes)
    cfg = tmp_path / "ssh_config"
    cfg.write_text(
        limited.ssh_config("onesession", TESTBED_KEY, f"    ControlMaster auto\n    ControlPath {short}/%C\n")
        + "    ControlPersist 30\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    try:
        runs = [
            subprocess.run(["ssh", "-F", str(cfg), "onesession", command], capture_output=True, timeout=30, env=env)
            for command in ("squeue --me", "echo one", "echo two")
        ]
    finally:
        subprocess.run(["ssh", "-F", str(cfg), "-O", "exit", "onesession"], capture_output=True, timeout=30, env=env)
        shutil.rmtree(short, ignore_errors=True)
    rcs = [r.returncode for r in runs]
    logins = limited.connections()
    print(f"\nMaxSessions 1, OpenSSH with ControlMaster, 3 commands: exits {rcs}, {logins} login(s)")
    assert rcs == [0, 0, 0], [r.stderr for r in runs]
    assert logins == 1, limited.log.read_text()[-3000:]
