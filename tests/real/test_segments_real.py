"""Runs longer than a partition allows, on the test bed (issue 18): segments with checkpoints, restarts
after a node failure, one job in status. All runs are submitted at once (a module fixture) and driven
together: their wall time overlaps (~3.5 min in all, most of it Slurm's wait before a requeued job may
start again, 121 s on the bed).

The program (tests/data/segments/counter.py) needs STEPS x 0.1 s of work, saves its state to
$AIF_CHECKPOINT_DIR when signalled (and every 20 steps) and resumes from it; its result must equal an
uninterrupted run's. Slurm sends the signal up to 30 s before `grace` (its time-limit check runs every
30 s), so a 1-minute segment with 20 s of grace does 10-40 s of work: 90 s of work needs >= 3 segments."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.real.bedjobs import TORCH_VENV, aif, bed_env

pytestmark = pytest.mark.real

COUNTER = Path(__file__).resolve().parents[1] / "data" / "segments" / "counter.py"
DDP = COUNTER.with_name("ddp_train.py")
DDP_STEPS = 400  # 0.1 s each and a DDP step: 2+ segments
NODE = "nid001001"  # the node the node-failure runs are pinned to (set DOWN, then resumed)
OTHER = "nid001000"  # where the other runs are pinned (a DOWN node takes every job on it)
ACCOUNT = ["-A", "project_465000001"]


def expected(steps: int) -> int:
    """The counter's result without any interruption."""
    total = 0
    for step in range(1, steps + 1):
        total = (total * 31 + step) % 1000003
    return total


def _spec(
    name: str, steps: int, segment: str = "1m", retries: int = 0, env: str = "", extra: str = "", node: str = OTHER
) -> str:
    """Each run pinned to a node: the node-failure runs to NODE, the others away from it."""
    return (
        f"name: {name}\nresources: {{time: 10m}}\ncheckpoint: {{segment: {segment}, grace: 20s}}\n"
        f"retries: {retries}\nrun: exec python3 counter.py {steps}\nupload: [counter.py]\n"
        f"slurm: {{nodelist: {node}}}\n{env}{extra}"
    )


# case -> (site, spec)
CASES = {
    # first, so that they run before the others fill the bed
    "node": ("lumi-bed", _spec("node", 600, "5m", retries=1, node=NODE)),
    "node0": ("lumi-bed", _spec("node0", 3000, "5m", retries=0, node=NODE)),
    "chain": ("lumi-chain", _spec("chain", 900)),
    "requeue": ("lumi-bed", _spec("requeue", 450)),
    "fails": ("lumi-chain", _spec("fails", 900, env="env: {FAIL_SEGMENT: '1'}\n")),
    "cancel": ("lumi-chain", _spec("cancel", 3000)),
    # inside a container (the bed's stub runtime: `module load aif-stub-runtime`, which execs the command)
    "container": (
        "lumi-chain",
        _spec(
            "container",
            700,
            extra="modules: [aif-stub-runtime]\ncontainer: {image: ctr.sif}\nupload: [counter.py, ctr.sif]\n",
        ).replace("upload: [counter.py]\n", ""),
    ),
    # torchrun: the agent ignores SIGUSR1 (it would die of it), its worker saves on it
    "torchrun": (
        "lumi-chain",
        _spec("torchrun", 700, extra="launcher: torchrun\nmodules: [pytorch/2.13.0-cpu]\n").replace(
            "run: exec python3 counter.py 700", "run: counter.py 700"
        ),
    ),
    # a real PyTorch DDP training (gloo, CPU) under torchrun on 2 nodes (the GPU partition's, which
    # no other run here uses), one rank each; rank 0 saves model, optimizer and step when signalled
    "ddp": (
        "lumi-chain",
        "name: ddp\nresources: {nodes: 2, gpus_per_node: 1, time: 10m}\ncheckpoint: {segment: 1m, grace: 20s}\n"
        f"retries: 0\nlauncher: torchrun\nmodules: [pytorch/2.13.0-cpu]\nenv: {{OMP_NUM_THREADS: '1'}}\n"
        f"run: ddp_train.py {DDP_STEPS}\nupload: [ddp_train.py]\n",
    ),
}


def _status(env: dict[str, str], cwd: Path, job_id: str) -> dict:
    r = aif(["status", job_id, "--json"], env, cwd, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["jobs"][0]


def _until(what: str, check, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(2)
    pytest.fail(f"timed out waiting for {what}")


def _scontrol(*args: str) -> None:
    subprocess.run(["scontrol", *args], check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("segments")
    env = bed_env(tmp)
    shutil.copy(COUNTER, tmp / "counter.py")
    shutil.copy(DDP, tmp / "ddp_train.py")
    (tmp / "ctr.sif").write_text("not a real image: the bed's stub runtime checks only that it exists\n")
    jobs: dict[str, dict] = {}
    for case, (site, text) in CASES.items():
        (tmp / f"{case}.yaml").write_text(text)
        r = aif(["submit", f"{case}.yaml", "--site", site, *ACCOUNT, "--json"], env, tmp, timeout=120)
        assert r.returncode == 0, (case, r.stderr)
        jobs[case] = json.loads(r.stdout)["jobs"][0]
    out: dict = {"env": env, "tmp": tmp, "jobs": jobs, "events": {}}

    # a node fails under two runs (retries 1: restarted from its checkpoint; retries 0: NODE_FAIL)
    on_node = [jobs[c]["slurm_job_id"] for c in ("node", "node0")]

    def squeue_states() -> list[str]:  # asked directly: quicker than a CLI round trip
        r = subprocess.run(["squeue", "-h", "-j", ",".join(on_node), "-o", "%T"], capture_output=True, text=True)
        return r.stdout.split()

    def both_running_with_a_checkpoint() -> bool:
        saved = Path(jobs["node"]["workdir"], "checkpoint", "state.json")
        return squeue_states() == ["RUNNING", "RUNNING"] and saved.exists()

    _until("the node runs to run with a checkpoint", both_running_with_a_checkpoint, 120)
    try:
        _scontrol("update", f"nodename={NODE}", "state=down", "reason=aifactory-segments-test")
        _until("Slurm to take the runs off the failed node", lambda: "RUNNING" not in squeue_states(), 60)
    finally:  # the bed's ReturnToService=2 may have put it back already (resume then says so and fails)
        subprocess.run(["scontrol", "update", f"nodename={NODE}", "state=resume"], capture_output=True, timeout=30)
        state = subprocess.run(["sinfo", "-h", "-N", "-n", NODE, "-o", "%T"], capture_output=True, text=True).stdout
        assert "down" not in state and "drain" not in state, (
            f"{NODE} stays {state.split()}: scontrol update nodename={NODE} state=resume"
        )

    # cancel during segment 2 (index 1): nothing of the run may stay queued
    def in_second_segment() -> bool:
        job = _status(env, tmp, jobs["cancel"]["id"])
        return job["state"] == "RUNNING" and len(job["segments"]) == 2

    _until("the cancel run's second segment", in_second_segment, 150)
    r = aif(["cancel", jobs["cancel"]["id"]], env, tmp, timeout=60)
    assert r.returncode == 0, r.stderr

    ids = [j["id"] for j in jobs.values()]
    r = aif(["wait", *ids, "--json", "--timeout", "420"], env, tmp, timeout=480)
    out["final"] = {j["id"]: j for j in json.loads(r.stdout)["jobs"]}
    return out


def _final(runs: dict, case: str) -> dict:
    return runs["final"][runs["jobs"][case]["id"]]


def _text(job: dict, name: str) -> str:
    path = Path(job["workdir"], name)
    return path.read_text(errors="replace") if path.exists() else ""


def test_a_run_over_three_segments_ends_with_the_uninterrupted_result(runs: dict) -> None:
    job = _final(runs, "chain")
    out = _text(job, "stdout.log")
    assert (job["state"], job["exit_code"]) == ("COMPLETED", 0), out + _text(job, "stderr.log")
    assert f"result {expected(900)}" in out
    segs = job["segments"]
    assert len(segs) >= 3, segs
    assert [s["segment"] for s in segs] == list(range(len(segs)))
    assert len({s["slurm_job_id"] for s in segs}) == len(segs)  # a chain: one Slurm job each
    assert [s["state"] for s in segs] == ["COMPLETED"] * len(segs)
    assert all(s["started_at"] and s["ended_at"] and s["exit_code"] == 0 for s in segs)
    assert job["slurm_job_id"] == segs[-1]["slurm_job_id"]
    # status shows ONE job with its segments; logs prints every segment's output
    env, tmp = runs["env"], runs["tmp"]
    listed = json.loads(aif(["list", "--json"], env, tmp, timeout=60).stdout)["jobs"]
    assert [j["id"] for j in listed].count(job["id"]) == 1 and len(listed) == len(CASES)
    logs = aif(["logs", job["id"]], env, tmp, timeout=60)
    assert logs.returncode == 0, logs.stderr
    for s in segs:
        assert f"segment {s['segment']} restarts 0 from step" in logs.stdout
    # a signal that comes while the program ends cannot be told from one mid-work: the script starts one more
    # segment, which finds the final state saved and prints the result again
    results = logs.stdout.count(f"result {expected(900)}")
    assert logs.stdout.count("signalled: saved at step") + results - 1 == len(segs) - 1, logs.stdout


def test_the_default_requeue_keeps_one_slurm_job(runs: dict) -> None:
    job = _final(runs, "requeue")
    assert (job["state"], job["exit_code"]) == ("COMPLETED", 0), _text(job, "stderr.log")
    assert f"result {expected(450)}" in _text(job, "stdout.log")
    segs = job["segments"]
    assert len(segs) >= 2 and {s["slurm_job_id"] for s in segs} == {job["slurm_job_id"]}, segs
    # the log of the first segment survived the requeue (--open-mode=append)
    assert "segment 0 restarts 0 from step 0" in _text(job, "stdout.log")


def test_a_real_failure_in_segment_2_ends_the_run(runs: dict) -> None:
    job = _final(runs, "fails")
    assert (job["state"], job["exit_code"]) == ("FAILED", 7), _text(job, "stderr.log")
    segs = job["segments"]
    assert [(s["segment"], s["state"], s["exit_code"]) for s in segs] == [(0, "COMPLETED", 0), (1, "FAILED", 7)]
    assert "no further segment" in _text(job, "stderr.log")
    assert _sacct_live(job) == []  # no segment 3 queued


def _sacct_live(job: dict) -> list[str]:
    """The run's Slurm jobs (sacct: every job of the test user that ran in the run's job dir) that are
    still queued or running; each segment must be among them."""
    r = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-u", "hpcuser", "-S", "now-1hour", "-o", "JobID,State,WorkDir"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    mine = [line.split("|") for line in r.stdout.splitlines() if line.endswith("|" + job["workdir"])]
    assert {s["slurm_job_id"] for s in job["segments"]} <= {i for i, *_ in mine}, (mine, job["segments"])
    return [f"{i} {s}" for i, s, *_ in mine if s.split()[0] in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING")]


def test_cancel_in_segment_2_leaves_nothing_queued_and_sync_rebuilds_the_run(runs: dict) -> None:
    job = _final(runs, "cancel")
    assert job["state"] == "CANCELLED", job
    assert len(job["segments"]) == 2 and job["segments"][1]["state"] == "CANCELLED", job["segments"]
    assert _sacct_live(job) == []
    # a lost laptop: sync rebuilds the same job with its segments from the job dir
    env, tmp = runs["env"], runs["tmp"]
    for db in Path(env["AIFACTORY_HOME"]).rglob("jobs.sqlite3*"):
        db.unlink()
    env = {**env, "AIFACTORY_ACCOUNT": ACCOUNT[1]}  # the account in the job dirs' path
    r = aif(["sync", "--site", "lumi-chain", "--json"], env, tmp, timeout=120)
    assert r.returncode == 0, r.stderr
    rebuilt = _status(env, tmp, job["id"])
    assert rebuilt["state"] == "CANCELLED" and rebuilt["token"] == job["token"]
    assert [s["slurm_job_id"] for s in rebuilt["segments"]] == [s["slurm_job_id"] for s in job["segments"]]


def test_a_node_failure_restarts_from_the_checkpoint(runs: dict) -> None:
    job = _final(runs, "node")
    out = _text(job, "stdout.log")
    assert (job["state"], job["exit_code"]) == ("COMPLETED", 0), out + _text(job, "stderr.log")
    assert f"result {expected(600)}" in out
    segs = job["segments"]
    assert [(s["segment"], s["restarts"], s["outcome"]) for s in segs] == [(0, 0, "restarted"), (0, 1, "done")]
    resumed = [line for line in out.splitlines() if line.startswith("segment 0 restarts 1 from step ")]
    assert resumed and int(resumed[0].rsplit(" ", 1)[1]) > 0, out  # from its checkpoint, not from 0


def test_a_node_failure_with_no_retries_ends_node_fail(runs: dict) -> None:
    job = _final(runs, "node0")
    assert job["state"] == "NODE_FAIL", job
    assert [(s["restarts"], s["state"]) for s in job["segments"]] == [(0, "NODE_FAIL")]


def test_the_same_run_inside_a_container(runs: dict) -> None:
    """The segment logic stays in the batch script, outside the container: the signal reaches the
    program inside, which resumes there from $AIF_CHECKPOINT_DIR (the job dir is bound)."""
    job = _final(runs, "container")
    out = _text(job, "stdout.log")
    assert (job["state"], job["exit_code"]) == ("COMPLETED", 0), out + _text(job, "stderr.log")
    assert f"result {expected(700)}" in out
    assert len(job["segments"]) >= 2 and "singularity exec" in _text(job, "job.sh")
    assert list(Path(job["workdir"], "aif-stub-runtime").glob("*.json")), "the stub runtime never ran"


def test_the_same_run_with_torchrun(runs: dict) -> None:
    job = _final(runs, "torchrun")
    out = _text(job, "stdout.log")
    assert (job["state"], job["exit_code"]) == ("COMPLETED", 0), out + _text(job, "stderr.log")
    assert f"result {expected(700)}" in out
    assert len(job["segments"]) >= 2 and "exec torchrun" in _text(job, "job.sh")


def _ddp_uninterrupted(tmp: Path) -> str:
    """The DDP training's result without any interruption: the same program, the same world size (2),
    here with torchrun --standalone and no pause between steps."""
    ckpt = tmp / "ddp-uninterrupted"
    ckpt.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIF_", "SLURM_"))},
        "OMP_NUM_THREADS": "1",
        "STEP_SECONDS": "0",
        "AIF_CHECKPOINT_DIR": str(ckpt),
        "AIF_SEGMENT": "0",
        "AIF_RESTARTS": "0",
    }
    cmd = [str(TORCH_VENV / "bin" / "torchrun"), "--standalone", "--nnodes=1", "--nproc-per-node=2"]
    r = subprocess.run([*cmd, str(DDP), str(DDP_STEPS)], env=env, cwd=ckpt, capture_output=True, text=True, timeout=300)
    results = [line for line in r.stdout.splitlines() if line.startswith("result ")]
    assert r.returncode == 0 and len(results) == 1, r.stdout + r.stderr[-3000:]
    assert "signalled" not in r.stdout and "from step 0" in r.stdout, r.stdout
    return results[0]


def test_a_pytorch_ddp_training_across_segments_equals_the_uninterrupted_one(runs: dict) -> None:
    job = _final(runs, "ddp")
    out = _text(job, "stdout.log")
    assert (job["state"], job["exit_code"]) == ("COMPLETED", 0), out + _text(job, "stderr.log")[-4000:]
    segs = job["segments"]
    assert len(segs) >= 2 and [s["outcome"] for s in segs] == ["next"] * (len(segs) - 1) + ["done"], segs
    for s in segs:  # both ranks (one per node) started each segment from the checkpoint rank 0 saved
        started = [line for line in out.splitlines() if f" segment {s['segment']} restarts 0 from step " in line]
        assert sorted(line.split("/")[0] for line in started) == ["rank 0", "rank 1"], out
        assert len({line.rsplit(" ", 1)[1] for line in started}) == 1, out
    # each segment but the last stopped on the signal, or finished just as the signal came (the script
    # cannot tell: it starts one more segment, which finds the final state saved and prints the result again)
    results = [line for line in out.splitlines() if line.startswith("result ")]
    assert out.count("signalled: saved at step") + len(results) - 1 == len(segs) - 1, out
    assert set(results) == {_ddp_uninterrupted(runs["tmp"])}, out
    assert results[0].endswith("world 2 in_sync True")
