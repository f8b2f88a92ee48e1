"""The segment logic of the batch script (templates/slurm/segments.sh.j2), run by bash with fake
`scontrol`/`sbatch`/`module` on PATH: what comes after a segment (done, failed, next by requeue or by
a dependent job, timeout, too many restarts), what the program sees, and what segments.tsv records."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from aifactory_cli.sites.profile import load_profile, load_profile_file
from aifactory_cli.sites.render import render
from aifactory_cli.sites.resolve import Overrides, resolve
from aifactory_cli.sites.userconfig import UserConfig
from aifactory_cli.spec.model import load_spec_text

REPO = Path(__file__).resolve().parents[2]
FAKES = {
    "scontrol": 'echo "scontrol $*" >> "$FAKE_LOG"; [ "$1 $2" = "show job" ] && cat "$FAKE_JOB" 2>/dev/null; '
    '[ "$1 $2" = "show hostnames" ] && echo node1; exit 0',
    "sbatch": 'echo "sbatch $* (in $PWD)" >> "$FAKE_LOG"; echo "4242;lumi"',
    "module": "exit 0",
}


@pytest.fixture(autouse=True)
def _home(aif_home):
    return aif_home


def _script(run: str, chain: bool = False, extra: str = "") -> str:
    text = f"name: s\nlauncher: none\nrun: {run}\nresources: {{time: 3m}}\ncheckpoint: {{segment: 1m, grace: 20s}}\n"
    profile = load_profile_file(REPO / "tests/profiles/bed/lumi-chain.yaml") if chain else load_profile("lumi")
    job = resolve(load_spec_text(text + extra).spec, profile, UserConfig(), Overrides(account="project_465000123"))
    return render(job, "0" * 32, "00000000").script


def _start(tmp: Path, script: str, job_id: str = "100") -> subprocess.Popen[str]:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in FAKES.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    (tmp / "job.sh").write_text(script)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_LOG": str(tmp / "calls.log"),
        "FAKE_JOB": str(tmp / "scontrol-show-job"),  # what `scontrol show job` prints (none: not known)
        "SLURM_SUBMIT_DIR": str(tmp),
        "SLURM_JOB_ID": job_id,
        "SLURM_JOB_NODELIST": "node1",
    }
    return subprocess.Popen(["bash", str(tmp / "job.sh")], env=env, cwd=tmp, text=True)


def _run(tmp: Path, script: str, job_id: str = "100", signal_after: float | None = None) -> int:
    proc = _start(tmp, script, job_id)
    if signal_after is not None:
        time.sleep(signal_after)
        proc.send_signal(signal.SIGUSR1)  # what Slurm's --signal=B:USR1@20 does
    return proc.wait(timeout=30)


def _log(tmp: Path) -> list[list[str]]:
    return [line.split("\t") for line in (tmp / "segments.tsv").read_text().splitlines()]


def _calls(tmp: Path) -> str:
    path = tmp / "calls.log"
    return path.read_text() if path.exists() else ""


def test_the_program_sees_its_segment_and_checkpoint_dir_and_a_clean_exit_is_done(tmp_path: Path) -> None:
    run = "'echo \"$AIF_SEGMENT $AIF_RESTARTS $AIF_CHECKPOINT_DIR\" > seen'"
    assert _run(tmp_path, _script(run)) == 0
    assert (tmp_path / "seen").read_text().split() == ["0", "0", str(tmp_path / "checkpoint")]
    assert (tmp_path / "checkpoint").is_dir()
    assert [row[0] for row in _log(tmp_path)] == ["start", "end"] and _log(tmp_path)[1][5:] == ["done", "0"]
    assert (tmp_path / "exit_code").read_text().strip() == "0"
    assert "scontrol requeue" not in _calls(tmp_path) and "sbatch" not in _calls(tmp_path)
    assert "Requeue=0" in _calls(tmp_path)  # retries 0: a node failure is not requeued by Slurm


def test_a_real_failure_ends_the_run_with_its_exit_code(tmp_path: Path) -> None:
    assert _run(tmp_path, _script("'exit 3'")) == 3
    assert _log(tmp_path)[-1][5:] == ["failed", "3"]
    assert (tmp_path / "exit_code").read_text().strip() == "3"
    assert "scontrol requeue" not in _calls(tmp_path) and "sbatch" not in _calls(tmp_path)


def test_signalled_with_time_left_requeues_and_writes_no_exit_code(tmp_path: Path) -> None:
    # the program saves on SIGUSR1 and exits 0 (the trap forwards the signal to it)
    run = "'trap \"echo saved > $AIF_CHECKPOINT_DIR/state; exit 0\" USR1; while :; do sleep 0.1; done'"
    assert _run(tmp_path, _script(run), signal_after=1.0) == 0
    assert (tmp_path / "checkpoint" / "state").read_text().strip() == "saved"
    assert _log(tmp_path)[-1][5:] == ["next", "0"]
    assert "scontrol update JobId=100 Requeue=1" in _calls(tmp_path)
    assert "scontrol requeue 100" in _calls(tmp_path)
    assert not (tmp_path / "exit_code").exists()


def test_without_requeue_the_next_segment_is_a_dependent_job(tmp_path: Path) -> None:
    assert _run(tmp_path, _script("'exec sleep 20'", chain=True), signal_after=1.0) == 0
    assert f"sbatch --parsable --dependency=afterany:100 job.sh (in {tmp_path})" in _calls(tmp_path)
    assert "scontrol requeue" not in _calls(tmp_path)
    assert (tmp_path / "slurm_job_id").read_text().strip() == "4242"  # the run's current Slurm job
    assert not (tmp_path / "exit_code").exists()
    # the next segment (the dependent job) counts on from the log
    run = "'echo \"$AIF_SEGMENT $AIF_RESTARTS\" > seen'"
    assert _run(tmp_path, _script(run, chain=True), job_id="4242") == 0
    assert (tmp_path / "seen").read_text().split() == ["1", "0"]
    assert [(r[0], r[1], r[3]) for r in _log(tmp_path)] == [
        ("start", "0", "100"),
        ("end", "0", "100"),
        ("start", "1", "4242"),
        ("end", "1", "4242"),
    ]


def test_a_restart_is_counted_and_past_retries_the_run_stops(tmp_path: Path) -> None:
    script = _script("'echo \"$AIF_SEGMENT $AIF_RESTARTS\" > seen'", extra="retries: 1\n")
    (tmp_path / "segments.tsv").write_text("start\t0\t0\t100\t1000\n")  # died: a node failure
    assert _run(tmp_path, script) == 0
    assert (tmp_path / "seen").read_text().split() == ["0", "1"]
    assert "Requeue=0" in _calls(tmp_path)  # its one retry used: the next node failure ends the run
    (tmp_path / "segments.tsv").write_text("start\t0\t0\t100\t1000\nstart\t0\t1\t100\t1100\n")
    assert _run(tmp_path, script) == 1
    assert _log(tmp_path)[-1][5:] == ["retries", "1"]


def test_signalled_with_the_run_time_used_up_is_a_timeout(tmp_path: Path) -> None:
    now = int(time.time())
    (tmp_path / "segments.tsv").write_text(f"start\t0\t0\t7\t{now - 200}\nend\t0\t0\t7\t{now - 20}\tnext\t0\n")
    assert _run(tmp_path, _script("'exec sleep 20'"), signal_after=1.0) == 138  # 128 + SIGUSR1
    assert _log(tmp_path)[-1][5] == "timeout"
    assert "scontrol requeue" not in _calls(tmp_path)


def test_started_again_after_the_run_ended_runs_nothing(tmp_path: Path) -> None:
    """A site that requeues a job that had finished (a node set DOWN while it completes): the log says
    the run is over, so the program does not run again and the run's exit code stays."""
    (tmp_path / "segments.tsv").write_text("start\t0\t0\t100\t1000\nend\t0\t0\t100\t1030\tfailed\t5\n")
    assert _run(tmp_path, _script("'echo ran > seen'")) == 5
    assert not (tmp_path / "seen").exists()
    assert len(_log(tmp_path)) == 2 and (tmp_path / "exit_code").read_text().strip() == "5"


def test_slurm_ending_the_job_is_no_outcome_of_the_program(tmp_path: Path) -> None:
    """A node of the job failed (the batch script outlives its step): no end line, no exit code; the
    next start counts a restart."""
    (tmp_path / "scontrol-show-job").write_text("JobId=100 JobName=s JobState=NODE_FAIL Reason=NodeDown\n")
    assert _run(tmp_path, _script("'exit 0'", extra="retries: 1\n")) == 0
    assert [row[0] for row in _log(tmp_path)] == ["start"]
    assert not (tmp_path / "exit_code").exists()
    (tmp_path / "scontrol-show-job").write_text("JobId=100 JobName=s JobState=RUNNING Reason=None\n")
    assert _run(tmp_path, _script("'echo \"$AIF_RESTARTS\" > seen'", extra="retries: 1\n")) == 0
    assert (tmp_path / "seen").read_text().strip() == "1" and _log(tmp_path)[-1][5] == "done"


# Slurm's srun delivers a forwarded signal to every process of the step: here a new process group
# that the fake srun signals as a whole; the fake torchrun (its agent: the signal ignored, as the
# script starts it) starts its worker only after 2 s, as a slow start on a busy node does
FAKE_SRUN = (
    "while [[ $1 == --* ]]; do shift; done\ntrap 'kill -USR1 -- \"-$child\" 2>/dev/null' USR1\n"
    'setsid "$@" & child=$!\nwhile kill -0 "$child" 2>/dev/null; do wait "$child"; done\nwait "$child"'
)
FAKE_TORCHRUN = 'while [[ $1 == --* ]]; do shift; done\nsleep 2\nexec python3 "$@"'
WORKER = """import signal, sys, time
stop = []
signal.signal(signal.SIGUSR1, lambda *_: stop.append(1))
end = time.monotonic() + 20  # never outlives a failed test for long (setsid: no one else stops it)
while not stop and time.monotonic() < end:
    time.sleep(0.05)
if stop:
    open("worker-saved", "w").write("saved")
"""


def test_torchrun_a_worker_started_after_the_signal_still_gets_it(tmp_path: Path) -> None:
    text = "name: s\nlauncher: torchrun\nrun: worker.py\nresources: {time: 3m}\ncheckpoint: {segment: 1m, grace: 20s}\n"
    profile = load_profile("lumi")
    job = resolve(load_spec_text(text).spec, profile, UserConfig(), Overrides(account="project_465000123"))
    script = render(job, "0" * 32, "00000000").script
    (tmp_path / "worker.py").write_text(WORKER)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {"srun": FAKE_SRUN, "torchrun": FAKE_TORCHRUN}.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    started = time.monotonic()
    # the signal comes at 0.5 s, before the worker runs (the first one reaches only the agent, which ignores it)
    assert _run(tmp_path, script, signal_after=0.5) == 0
    assert (tmp_path / "worker-saved").read_text() == "saved"
    assert _log(tmp_path)[-1][5:] == ["next", "0"] and "scontrol requeue 100" in _calls(tmp_path)
    assert time.monotonic() - started < 15
