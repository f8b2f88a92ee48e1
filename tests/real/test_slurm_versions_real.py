"""What a user sees is the same on Slurm 22.05 and 24.11 (each test runs on both beds), though Slurm's
own output differs (tests/data/slurm/<version>/): refusals are exit 2 with Slurm's words and leave
nothing `sync` could bring back (24.11 even keeps some refused jobs in sacct, as FAILED with their
WorkDir); `status --json` of a pending, held, running and ended job says only what is known (24.11's
sacct no longer gives a held or waiting job's reason: squeue does)."""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.real.bedjobs import aif, bed_env
from tests.real.slurmbeds import SlurmBed

pytestmark = pytest.mark.real
ACCOUNT = "project_465000001"

# spec lines (and -A) that Slurm refuses though the lumi profile allows them -> Slurm's words
REFUSALS = {
    "too-many-nodes": ("resources: {nodes: 3, time: 5m}\n", ACCOUNT, "Node count specification invalid"),
    # 3 nodes of 8 GPUs on 2-node small-g: the controller's words are in no keyword list (issue 17: was
    # exit 3 "sbatch failed", and status said "never submitted")
    "too-many-cpus": (
        "resources: {nodes: 3, gpus_per_node: 8, partition: small-g, time: 5m}\n",
        ACCOUNT,
        "More processors requested than permitted",
    ),
    "bad-begin": ("slurm: {begin: not-a-time}\n", ACCOUNT, "Invalid --begin specification"),
    "bad-feature": ("slurm: {constraint: nosuchfeature}\n", ACCOUNT, "Invalid feature specification"),
    "too-much-memory": ("resources: {memory: 900G}\n", ACCOUNT, "Memory specification can not be satisfied"),
    "unknown-option": ("slurm: {bogus-opt: 1}\n", ACCOUNT, "unrecognized option '--bogus-opt=1'"),
}


def _env(bed: SlurmBed, tmp_path: Path) -> dict[str, str]:
    return bed.env(bed_env(tmp_path))


def test_refusals_are_exit_2_and_sync_brings_none_back(tmp_path: Path, slurm_bed: SlurmBed) -> None:
    env = _env(slurm_bed, tmp_path)

    def submit(label: str) -> subprocess.CompletedProcess[str]:
        lines, account, _ = REFUSALS[label]
        (tmp_path / f"{label}.yaml").write_text(f"name: ref-{label}\n{lines}run: hostname\n")
        return aif(["submit", f"{label}.yaml", "--site", slurm_bed.lumi, "-A", account], env, tmp_path, 120)

    with ThreadPoolExecutor(len(REFUSALS)) as pool:  # as users' parallel submits: one per refusal
        results = dict(zip(REFUSALS, pool.map(submit, REFUSALS), strict=True))
    table = []
    for label, r in results.items():
        message = next((line for line in r.stderr.splitlines() if line.startswith("error:")), r.stderr.strip())
        table.append(f"  {slurm_bed.version}  {label:16} exit {r.returncode}  {message}")
    for label, r in results.items():
        assert r.returncode == 2, (label, r.stderr)
        assert "Slurm rejected the job: " in r.stderr and REFUSALS[label][2] in r.stderr, (label, r.stderr)
        assert "interrupted" not in r.stderr and "sbatch failed" not in r.stderr, (label, r.stderr)
    print(f"\nrefusals on Slurm {slurm_bed.version}:\n" + "\n".join(table))
    r = aif(["list", "--json"], env, tmp_path, 60)
    assert json.loads(r.stdout)["jobs"] == []
    started = time.monotonic()
    r = aif(["sync", "--site", slurm_bed.lumi, "--json"], env, tmp_path, 120)
    print(f"sync: {time.monotonic() - started:.1f} s")
    assert r.returncode == 0, r.stderr
    added = json.loads(r.stdout)["added"]
    back = [
        j for j in json.loads(aif(["list", "--json"], env, tmp_path, 60).stdout)["jobs"] if j["name"].startswith("ref-")
    ]
    assert back == [], (added, back)  # no refused submission comes back, as PREPARED or otherwise
    r = aif(["status", "ref-too-many-cpus"], env, tmp_path, 60)
    assert "never submitted" not in r.stdout + r.stderr and "interrupted" not in r.stdout + r.stderr, r


def test_status_json_of_pending_held_running_and_ended_jobs(tmp_path: Path, slurm_bed: SlurmBed) -> None:
    env = _env(slurm_bed, tmp_path)
    # one node that a `blocker` takes whole, so that `waiting` pends for Resources with Slurm's
    # expected start (squeue's START_TIME) set: that estimate must never show as started_at
    node = subprocess.run(
        [*slurm_bed.ssh, "sinfo -h -N -p small -o %N | sort | tail -n 1"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    assert node, "no node in the bed's small partition"
    whole = f"resources: {{time: 5m, partition: small, exclusive: true}}\nslurm: {{nodelist: {node}}}\n"
    specs = {
        "blocker": f"{whole}run: sleep 300\n",
        "waiting": f"{whole}run: echo late\n",
        "begin": "resources: {time: 5m}\nslurm: {begin: now+300}\nrun: echo later\n",
        "held": "resources: {time: 5m}\nslurm: {hold: true}\nrun: echo never\n",
        "running": "resources: {time: 5m}\nrun: sleep 300\n",
        "ended": "resources: {time: 5m}\nrun: echo done\n",
    }
    ids = {}
    for key, text in specs.items():
        (tmp_path / f"{key}.yaml").write_text(f"name: col-{key}\n{text}")
        r = aif(["submit", f"{key}.yaml", "--site", slurm_bed.lumi, "-A", ACCOUNT], env, tmp_path, 120)
        assert r.returncode == 0, r.stderr
        ids[key] = r.stdout.strip()
    try:
        # the backfill pass (every 30 s) sets the expected start; other jobs on the bed can delay the blocker
        deadline = time.monotonic() + 150
        while True:
            r = aif(["status", *ids.values(), "--json"], env, tmp_path, 60)
            jobs = {j["name"].removeprefix("col-"): j for j in json.loads(r.stdout)["jobs"]}
            waiting = jobs["waiting"]
            if (jobs["running"]["state"], jobs["ended"]["state"], jobs["blocker"]["state"]) == (
                "RUNNING",
                "COMPLETED",
                "RUNNING",
            ) and (waiting["reason"], bool(waiting["expected_start"])) == ("Resources", True):
                break
            seen = {k: (j["state"], j["reason"], j["expected_start"]) for k, j in jobs.items()}
            assert time.monotonic() < deadline, (node, seen)
            time.sleep(1)
        keys = ("state", "slurm_state", "exit_code", "reason", "started_at", "expected_start", "ended_at")
        shown = {k: {f: j.get(f) for f in keys} for k, j in jobs.items()}
        print(f"\nstatus --json on Slurm {slurm_bed.version}:\n{json.dumps(shown, indent=1)}")
        begin, held, running, ended = (jobs[k] for k in ("begin", "held", "running", "ended"))
        # pending: no exit code (sacct lists a --begin job as PENDING 0:0 on 24.11), no start, squeue's reason
        assert (begin["state"], begin["exit_code"], begin["started_at"], begin["reason"]) == (
            "PENDING",
            None,
            None,
            "BeginTime",
        )
        assert begin["expected_start"] is not None  # Slurm's estimate, its own field
        assert (held["state"], held["exit_code"], held["started_at"], held["reason"]) == (
            "PENDING",
            None,
            None,
            "JobHeldUser",
        )
        assert (held["expected_start"], running["expected_start"]) == (None, None)
        # pending for Resources: squeue's expected start is expected_start, never started_at; sacct's 0:0 no exit
        assert (waiting["state"], waiting["exit_code"], waiting["started_at"]) == ("PENDING", None, None), waiting
        assert (running["exit_code"], running["reason"], running["ended_at"]) == (None, None, None)
        assert running["started_at"] is not None
        assert (ended["exit_code"], ended["reason"]) == (0, None)
        assert ended["started_at"] is not None and ended["started_at"] <= ended["ended_at"]
    finally:  # `waiting` first: it must not start when the blocker goes
        aif(["cancel", *sorted(ids.values(), key=lambda i: i != ids.get("waiting"))], env, tmp_path, 60)
    # cancelled while pending: never started, no exit code, the stale pending reason dropped
    r = aif(["wait", ids["begin"], ids["held"], ids["waiting"], "--json", "--timeout", "60"], env, tmp_path, 120)
    for j in json.loads(r.stdout)["jobs"]:
        assert (j["state"], j["exit_code"], j["started_at"], j["reason"]) == ("CANCELLED", None, None, None), j


def test_the_bed_runs_the_slurm_it_claims(slurm_bed: SlurmBed) -> None:
    r = subprocess.run([*slurm_bed.ssh, "sinfo --version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.split()[-1].startswith(slurm_bed.version + "."), r
