"""Settling an interrupted submission: the pure decision, on the lookup recorded from the test bed
(tests/data/record_settle_lookup.py), and what a failed submission leaves in the store."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from aifactory_cli.errors import RemoteError, SubmitRejected
from aifactory_cli.jobs.store import Job, Store, now_iso
from aifactory_cli.scheduler import slurm
from aifactory_cli.service import settle
from aifactory_cli.transport import CommandResult

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"
RECORDED = json.loads((DATA / "settle_lookup_jobs.json").read_text())


def _job(name: str, **kw: object) -> Job:
    rec = RECORDED[name]
    fields: dict = dict(id=rec["id"], token=rec["token"], name=name, site="testbed", state="UNKNOWN",
                        created_at=now_iso(), updated_at=now_iso(), workdir=rec["workdir"],
                        extra={"in_doubt": True})  # fmt: skip
    fields.update(kw)
    return Job(**fields)


def _decide(text: str) -> dict[str, tuple[str, str | None]]:
    jobs = [_job(name) for name in RECORDED]
    return {d.job.name: (d.outcome, d.slurm_job_id) for d in settle.decide(jobs, settle.parse_lookup(text, "slurm"))}


def test_recorded_lookup_finds_each_queued_job_by_its_mark_token_or_job_dir() -> None:
    got = _decide((DATA / "settle_lookup.txt").read_text())
    assert got == {
        "marked": ("queued", RECORDED["marked"]["sbatch"]),  # its job dir's slurm_job_id file
        "token_only": ("queued", RECORDED["token_only"]["sbatch"]),  # the token in squeue's comment
        "sacct_only": ("queued", RECORDED["sacct_only"]["sbatch"]),  # ended: sacct's (absolute) WorkDir
        "never": ("not_queued", None),
    }
    # the recording holds decoys (jobs of other runs, with and without tokens): none is taken
    lookup = settle.parse_lookup((DATA / "settle_lookup.txt").read_text(), "slurm")
    # squeue lists a job without a token (`(null)` comment) beside the two with one: only those two are
    # taken; sacct lists the job dirs of other jobs beside this run's
    text = (DATA / "settle_lookup.txt").read_text()
    assert "|(null)" in text and len(lookup.by_token) == 2 and len(lookup.by_workdir) > 1 and lookup.queue_ok


def test_when_squeue_does_not_answer_an_unseen_job_is_unknown_not_failed() -> None:
    text = (DATA / "settle_lookup.txt").read_text()
    # what the same command prints when squeue cannot reach the controller (stderr goes to /dev/null)
    failed = re.sub(r"(@@AIF@@ squeue\n).*?\n(@@AIF@@ rc) 0\n", r"\1\n\2 1\n", text, flags=re.S)
    assert failed != text
    got = _decide(failed)
    assert got == {
        "marked": ("queued", RECORDED["marked"]["sbatch"]),
        "token_only": ("unknown", None),  # queued, but only squeue could have told
        "sacct_only": ("queued", RECORDED["sacct_only"]["sbatch"]),
        "never": ("unknown", None),
    }


def test_when_sacct_does_not_answer_an_ended_job_is_unknown_not_failed() -> None:
    # slurmdbd down: sacct prints nothing (stderr goes to /dev/null) and exits 1; a job that sbatch
    # queued while reporting a failure and that has already ended is only in sacct's answer
    text = (DATA / "settle_lookup.txt").read_text()
    failed = re.sub(r"(@@AIF@@ sacct\n).*?\n(@@AIF@@ rc) 0\n", r"\1\n\2 1\n", text, flags=re.S)
    assert failed != text
    got = _decide(failed)
    assert got["sacct_only"] == ("unknown", None)  # was ("not_queued", None): "never submitted, submit it again"
    assert got["never"] == ("unknown", None)
    assert got["marked"] == ("queued", RECORDED["marked"]["sbatch"])
    assert got["token_only"] == ("queued", RECORDED["token_only"]["sbatch"])


def test_local_lookup_reads_the_marks_only() -> None:
    jobs = [_job("marked"), _job("never"), _job("token_only", workdir=None)]
    command = settle.lookup_command(jobs, "local")
    assert "squeue" not in command and "sacct" not in command and command.count("slurm_job_id") == 2
    output = f"\n@@AIF@@ id.{jobs[0].id}\n7\n@@AIF@@ rc 0\n\n@@AIF@@ id.{jobs[1].id}\n\n@@AIF@@ rc 1\n"
    lookup = settle.parse_lookup(output, "local")
    decided = [(d.outcome, d.slurm_job_id) for d in settle.decide(jobs, lookup)]
    assert decided == [("queued", "7"), ("not_queued", None), ("not_queued", None)]
    slurm_command = settle.lookup_command(jobs, "slurm")
    assert "squeue --me --states=all" in slurm_command and "--format=JobID,WorkDir" in slurm_command


def test_which_jobs_are_in_doubt() -> None:
    now = dt.datetime.now(dt.timezone.utc)
    old = (now - dt.timedelta(hours=2)).isoformat()
    jobs = [
        _job("marked"),  # flagged by the process that saw the failure
        _job("never", state="PREPARED", extra={}, created_at=old),  # that process died
        _job("token_only", state="PREPARED", extra={}),  # being submitted right now
        _job("sacct_only", slurm_job_id="5"),  # settled already
    ]
    assert [j.name for j in settle.in_doubt(jobs, now)] == ["marked", "never"]


def test_sbatch_errors_say_whether_slurm_may_have_queued_the_job() -> None:
    def parse(stderr: str) -> BaseException:
        with pytest.raises((RemoteError, SubmitRejected)) as info:
            slurm.parse_sbatch(CommandResult(1, "", stderr))
        return info.value

    down = parse("sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)")
    assert isinstance(down, RemoteError) and down.queued == "no"
    timeout = parse("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation")
    assert isinstance(timeout, RemoteError) and timeout.queued == "maybe"
    assert RemoteError("x").queued == "maybe"  # the safe default: in doubt


def test_a_failed_submission_is_dropped_only_when_nothing_was_queued(aif_home: Path) -> None:
    store = Store()
    try:
        for queued in ("no", "maybe"):
            job = _job("marked", id=f"job{queued}", token=queued * 8, extra={})
            store.add(job)
            exc = RemoteError("sbatch failed", "a hint", queued=queued)  # type: ignore[arg-type]
            settle.submission_failed(store, job, exc)
            if queued == "no":
                assert store.by_token(job.token) is None and exc.hint == "a hint"
            else:
                kept = store.find(job.id)
                assert kept.state == "UNKNOWN" and kept.extra["in_doubt"] is True
                assert "submission outcome unknown: sbatch failed" in (kept.reason or "")
                assert exc.hint and "never submitted twice" in exc.hint
    finally:
        store.close()
