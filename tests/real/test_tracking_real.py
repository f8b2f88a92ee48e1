"""Tracking on the real test bed: states as Slurm reports them, arrays, one query for many jobs,
sync from the site alone, logs --follow, fetch."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.real.conftest import TESTBED_ACCOUNT, TESTBED_KEY, TESTBED_SSH_CONFIG
from tests.real.slurmbeds import SlurmBed

pytestmark = pytest.mark.real
ACCOUNT = TESTBED_ACCOUNT
KEY = TESTBED_KEY
SSH = ["ssh", "-F", str(TESTBED_SSH_CONFIG), "testbed"]


def _spec(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"name: {name}\n{text}")
    return str(p)


def _jobs(r) -> list[dict]:
    assert r.stdout, r.stderr
    return json.loads(r.stdout)["jobs"]


def _submit(tb, spec: str) -> str:
    r = tb("submit", spec, "--site", "testbed")
    assert r.code == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.slow
def test_states_are_what_slurm_did(tb, tmp_path: Path, slurm_bed: SlurmBed) -> None:
    """On each Slurm version (22.05, 24.11): the same states, exit codes, times and reasons."""
    extra = slurm_bed.extra()
    tb = functools.partial(tb, env=extra) if extra else tb

    def submit(name: str, text: str) -> str:
        r = tb("submit", _spec(tmp_path, name, text), "--site", slurm_bed.testbed)
        assert r.code == 0, r.stderr
        return r.stdout.strip()

    ids = {
        # the TIMEOUT job first: Slurm needs 60-90 s to notice it (testbed-notes)
        "timeout": submit("tmo", "resources: {time: 1m}\nrun: sleep 300\n"),
        "ok": submit("ok", "run: echo fine\n"),
        "fail": submit("fail", "run: exit 3\n"),
        "running": submit("long", "run: echo started; sleep 300\n"),
        "pending": submit("held", "slurm: {hold: true}\nrun: echo never\n"),
        "array": submit("arr", "matrix: {I: [a, b, c, d]}\nrun: echo element $I\n"),
    }
    # cancel one while it runs, one while it is pending
    r = tb("wait", ids["running"], "--timeout", "3")
    assert r.code == 5  # timed out (sleep 300 cannot have ended)
    deadline = time.monotonic() + 60  # a slow machine may take a while to start it
    while True:
        status = _jobs(tb("status", ids["running"], ids["pending"], "--json"))
        states = {j["id"]: j["state"] for j in status}
        if states.get(ids["running"]) == "RUNNING" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert states == {ids["running"]: "RUNNING", ids["pending"]: "PENDING"}
    held = next(j for j in status if j["id"] == ids["pending"])
    assert (held["reason"], held["exit_code"], held["started_at"]) == ("JobHeldUser", None, None)
    running = next(j for j in status if j["id"] == ids["running"])
    assert running["exit_code"] is None and running["started_at"] is not None  # sacct says 0:0: not an exit
    assert tb("cancel", ids["running"], ids["pending"]).code == 0
    r = tb("wait", *ids.values(), "--timeout", "180", "--json")
    assert r.code == 1  # not all COMPLETED
    got = {j["id"]: j for j in _jobs(tb("status", "--json"))}
    expect = {
        "ok": ("COMPLETED", 0),
        "fail": ("FAILED", 3),
        "running": ("CANCELLED", None),
        "pending": ("CANCELLED", None),
        "timeout": ("TIMEOUT", None),
        "array": ("COMPLETED", 0),
    }
    for key, (state, code) in expect.items():
        job = got[ids[key]]
        assert job["state"] == state, (key, job)
        if code is not None:
            assert job["exit_code"] == code, (key, job)
    assert got[ids["running"]]["slurm_state"].startswith("CANCELLED by ")  # the raw state is kept
    # times are ISO 8601 in UTC with an offset, like submitted_at (Slurm's own format has none)
    ok = got[ids["ok"]]
    for key in ("submitted_at", "started_at", "ended_at"):
        assert ok[key].endswith("+00:00"), (key, ok[key])
    assert ok["submitted_at"] <= ok["ended_at"] and ok["started_at"] <= ok["ended_at"]
    assert got[ids["pending"]]["started_at"] is None  # cancelled while pending: it never ran
    tasks = got[ids["array"]]["tasks"]
    assert [(t["task_id"], t["state"]) for t in tasks] == [(i, "COMPLETED") for i in range(4)]
    assert tb("logs", ids["array"], "--task", "3").stdout.strip() == "element d"


def test_many_live_jobs_cost_one_connection_and_one_sacct(aif_home: Path, tb, monkeypatch) -> None:
    monkeypatch.setenv("AIFACTORY_SSH_CONFIG", str(aif_home.parent / "ssh_config_empty"))
    (aif_home.parent / "ssh_config_empty").write_text("")
    script = "#!/bin/bash\n#SBATCH --hold\n#SBATCH --output=/dev/null\ntrue\n"
    loop = (
        f"cd /tmp && cat > held.sh && for i in $(seq 200); do sbatch --parsable --account={ACCOUNT} "
        "--time=5 held.sh; done"
    )
    out = subprocess.run([*SSH, loop], input=script, capture_output=True, text=True, check=True).stdout.split()
    assert len(out) == 200
    from aifactory_cli.jobs.model import Job, now_iso
    from aifactory_cli.service.session import Service

    time.sleep(2)  # slurmdbd lags ~1 s behind brand-new jobs (then squeue would be asked too)

    try:
        with Service() as svc:
            for i, sid in enumerate(out):
                now = now_iso()
                svc.store.add(
                    Job(
                        id=f"many{i:04d}",
                        token=f"many{i:04d}" + "0" * 24,
                        name="held",
                        site="testbed",
                        state="PENDING",
                        created_at=now,
                        updated_at=now,
                        slurm_job_id=sid,
                        workdir="/tmp",
                    )
                )
        with Service() as svc:
            jobs = svc.status([])
            transport = svc.backend("testbed").transport
            assert len([j for j in jobs if j.state == "PENDING" and j.reason == "JobHeldUser"]) == 200
            assert transport.connections_opened == 1
            assert transport.commands_run == 1  # one sacct for all 200
    finally:
        subprocess.run([*SSH, "scancel " + " ".join(out)], check=False)


def test_sync_rebuilds_the_store_from_the_site(tb, aif_home: Path, tmp_path: Path) -> None:
    a = _submit(tb, _spec(tmp_path, "syncok", "run: echo ok\n"))
    b = _submit(tb, _spec(tmp_path, "syncfail", "run: exit 3\n"))
    assert tb("wait", a, b, "--timeout", "60").code == 1
    before = {j["id"]: (j["state"], j["exit_code"], j["slurm_job_id"]) for j in _jobs(tb("list", "--json"))}
    shutil.rmtree(aif_home / "state")
    assert _jobs(tb("list", "--json")) == []
    r = tb("sync", "--site", "testbed", "--json")
    assert r.code == 0, r.stderr
    after = {j["id"]: (j["state"], j["exit_code"], j["slurm_job_id"]) for j in _jobs(tb("list", "--json"))}
    for job_id, value in before.items():
        assert after[job_id] == value
    assert set(json.loads(r.stdout)["added"]) >= set(before)
    prov = _jobs(tb("status", a, "--json"))[0]["provenance"]
    assert "#SBATCH --comment=aifactory:" in prov["script"] and prov["hash"]


def test_logs_follow_and_fetch(tb, tmp_path: Path) -> None:
    job = _submit(
        tb,
        _spec(
            tmp_path,
            "stream",
            "download: ['outputs/**', 'summary.txt']\n"
            "run: for i in 1 2 3; do echo line $i; sleep 1; done; mkdir -p outputs/a; "
            "echo r > outputs/a/r.json; echo s > summary.txt; echo skip > other.txt\n",
        ),
    )
    r = tb("logs", job, "--follow", timeout=60)
    assert r.code == 0
    assert r.stdout.splitlines() == ["line 1", "line 2", "line 3"]
    dest = tmp_path / "fetched"
    r = tb("fetch", job, "--dest", str(dest))
    assert r.code == 0, r.stderr
    assert (dest / "outputs" / "a" / "r.json").read_text() == "r\n"
    assert (dest / "summary.txt").exists() and not (dest / "other.txt").exists()
