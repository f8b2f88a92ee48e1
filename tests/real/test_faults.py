"""Faults with real processes: the connection dropped between sending sbatch and reading its reply,
sshd restarted while `wait` runs, slurmctld down, a full or read-only state dir. After each: no
duplicate, nothing missing."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.real.conftest import TESTBED_ACCOUNT, TESTBED_CLIENT, TESTBED_DIR
from tests.real.faultproxy import FaultProxy

pytestmark = pytest.mark.real
CLIENT = TESTBED_CLIENT
PIDS = TESTBED_DIR / "pids"  # tests/testbed/lib.sh: $TESTBED_DIR/pids
ACCOUNT = TESTBED_ACCOUNT


def _pid(name: str) -> int:
    return int((PIDS / f"{name}.pid").read_text().split()[0])


def _sacct_count(name: str) -> int:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-a", "-S", "now-1hour", "-o", "JobName", "--name", name],
        capture_output=True,
        text=True,
    ).stdout
    return len([x for x in out.splitlines() if x.strip() == name])


def _aif(args: list[str], env: dict[str, str], timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aifactory_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kw,
    )


def _proxied_site(tmp_path: Path, proxy: FaultProxy) -> None:
    pin = (CLIENT / "host_fingerprint").read_text().strip()
    empty_known = tmp_path / "known_hosts"
    empty_known.write_text("")
    (tmp_path / "profiles" / "tbproxy.yaml").write_text(
        f"extends: testbed\nssh: {{port: {proxy.port}, known_hosts: {empty_known}, host_key_fingerprints: ['{pin}']}}\n"
    )


def test_connection_dropped_after_sbatch_was_sent(testbed_env: dict[str, str], tmp_path: Path) -> None:
    env = testbed_env
    proxy = FaultProxy(("127.0.0.1", 2222))
    try:
        _proxied_site(tmp_path, proxy)
        name = f"drop{os.getpid()}{int(time.time()) % 100000}"
        spec = tmp_path / "job.yaml"
        spec.write_text(f"name: {name}\nrun: echo done\nresources: {{time: 5m}}\n")
        ctld = _pid("slurmctld")
        os.kill(ctld, 19)  # SIGSTOP: sbatch will block until we let the controller go on
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "aifactory_cli", "submit", str(spec), "--site", "tbproxy"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                stdin=subprocess.DEVNULL,
            )
            deadline = time.time() + 30
            while time.time() < deadline:  # sbatch is running on the login node: the command was sent
                if subprocess.run(["pgrep", "-u", "hpcuser", "-x", "sbatch"], capture_output=True).returncode == 0:
                    break
                time.sleep(0.02)
            else:
                pytest.fail("sbatch never started")
            proxy.freeze()  # from now on the reply never reaches the client
        finally:
            os.kill(ctld, 18)  # SIGCONT
        workdirs = Path(f"/scratch/{ACCOUNT}/hpcuser/aifactory")
        deadline = time.time() + 30
        while time.time() < deadline and not list(workdirs.glob(f"{name}-*/slurm_job_id")):
            time.sleep(0.05)
        assert list(workdirs.glob(f"{name}-*/slurm_job_id")), "sbatch did not complete on the site"
        proxy.cut()
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 3, err
        assert "unknown" in err.lower() and "never submitted twice" in err
        assert "Traceback" not in err
        store = json.loads(_aif(["list", "--json"], env).stdout)["jobs"]
        assert [(j["state"], j["slurm_job_id"]) for j in store] == [("UNKNOWN", None)]
        # the next command looks the job up on the site before anything is sent again
        again = _aif(["submit", str(spec), "--site", "tbproxy", "--json"], env)
        assert again.returncode == 0, again.stderr
        assert "not submitting again" in again.stderr
        status = json.loads(_aif(["status", "--json"], env).stdout)["jobs"]
        assert len(status) == 1 and status[0]["slurm_job_id"] is not None
        assert status[0]["id"] == store[0]["id"]
        assert _aif(["wait", status[0]["id"], "--timeout", "60"], env).returncode == 0
        assert _sacct_count(name) == 1  # exactly one job in Slurm, one in the store
    finally:
        proxy.close()


def test_sshd_restart_while_waiting(testbed_env: dict[str, str], tmp_path: Path) -> None:
    """`wait` outlives an sshd restart that drops its connection: it logs in again and reports the
    job's end. The site goes through a proxy that counts logins, so the test knows the wait really
    lost its connection and made a new one (not just that it ended well)."""
    env = testbed_env
    proxy = FaultProxy(("127.0.0.1", 2222))
    try:
        _proxied_site(tmp_path, proxy)
        spec = tmp_path / "job.yaml"
        spec.write_text("name: survive\nrun: sleep 12; echo done\nresources: {time: 5m}\n")
        r = _aif(["submit", str(spec), "--site", "tbproxy"], env)
        assert r.returncode == 0, r.stderr
        job_id = r.stdout.strip()
        waiter = subprocess.Popen(
            [sys.executable, "-m", "aifactory_cli", "wait", job_id, "--timeout", "120", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        time.sleep(3)
        assert waiter.poll() is None, "wait ended before sshd went down: the test proves nothing"
        logins_before = proxy.opened
        assert logins_before >= 1
        os.kill(_pid("sshd"), 15)  # the listener...
        subprocess.run(["pkill", "-u", "hpcuser", "-x", "sshd"], check=False)  # ...and every open session
        time.sleep(2)
        started = subprocess.run(["bash", str(REPO / "tests" / "testbed" / "start.sh")], capture_output=True, text=True)
        assert started.returncode == 0, started.stderr[-2000:]
        out, err = waiter.communicate(timeout=150)
        assert waiter.returncode == 0, err
        assert json.loads(out)["jobs"][0]["state"] == "COMPLETED"
        # only the wait talks to the site after the restart: a new login is the wait reconnecting
        assert proxy.opened > logins_before, (proxy.opened, err)
    finally:
        proxy.close()


def test_slurmctld_down_is_a_clear_error_and_nothing_is_lost(testbed_env: dict[str, str], tmp_path: Path) -> None:
    env = testbed_env
    spec = tmp_path / "job.yaml"
    spec.write_text("name: noctld\nrun: echo hi\nresources: {time: 5m}\n")
    before = _aif(["submit", str(spec), "--site", "testbed"], env)
    assert before.returncode == 0
    os.kill(_pid("slurmctld"), 15)
    try:
        time.sleep(1)
        r = _aif(["submit", str(spec), "--site", "testbed"], env, timeout=120)
        assert r.returncode == 3, r.stderr
        assert "Unable to contact slurm controller" in r.stderr and "nothing was queued" in r.stderr
        assert "Traceback" not in r.stderr
        # status still answers from accounting (slurmdbd is up)
        s = _aif(["status", "--json"], env, timeout=120)
        assert s.returncode == 0, s.stderr
        jobs = json.loads(s.stdout)["jobs"]
        assert [j["id"] for j in jobs] == [before.stdout.strip()]  # the refused one is not recorded
    finally:
        started = subprocess.run(["bash", str(REPO / "tests" / "testbed" / "start.sh")], capture_output=True, text=True)
        assert started.returncode == 0, started.stderr[-2000:]
    r = _aif(["submit", str(spec), "--site", "testbed", "--wait"], env)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(_aif(["list", "--json"], env).stdout)["jobs"]) == 2


def _integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def _mount(path: Path, *opts: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(opts), "tmpfs", str(path)], check=True)


def test_full_and_read_only_state_dir(testbed_env: dict[str, str], tmp_path: Path) -> None:
    env = testbed_env
    home = tmp_path / "small"
    _mount(home, "size=512k")
    try:
        env = {**env, "AIFACTORY_HOME": str(home)}
        hello = REPO / "examples" / "hello.yaml"
        assert _aif(["submit", str(hello), "--wait"], env).returncode == 0
        # fill the disk
        subprocess.run(["dd", "if=/dev/zero", f"of={home}/filler", "bs=4k", "count=1000"], capture_output=True)
        r = _aif(["submit", str(hello), "--wait"], env)
        assert r.returncode in (2, 3), r.stderr
        assert "Traceback" not in r.stderr and "error:" in r.stderr
        assert "space" in r.stderr.lower() or "full" in r.stderr.lower()
        (home / "filler").unlink()
        listed = _aif(["list", "--json"], env)
        assert listed.returncode == 0, listed.stderr
        assert next(j["state"] for j in json.loads(listed.stdout)["jobs"]) == "COMPLETED"
        db = home / "state" / "jobs.sqlite3"
        assert _integrity(db) == "ok"
        # read-only
        subprocess.run(["mount", "-o", "remount,ro", str(home)], check=True)
        r = _aif(["submit", str(hello)], env)
        assert r.returncode == 3, r.stderr
        assert "Traceback" not in r.stderr and ("read-only" in r.stderr.lower() or "readonly" in r.stderr.lower())
        subprocess.run(["mount", "-o", "remount,rw", str(home)], check=True)
        assert _integrity(db) == "ok"
        assert len(json.loads(_aif(["list", "--json"], env).stdout)["jobs"]) == 1
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)
