"""The pure Slurm parsers, fed with output recorded from the real test bed
(tests/data/record_slurm_output.py; Slurm 22.05.8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aifactory_cli.errors import RemoteError, SubmitRejected
from aifactory_cli.scheduler import slurm
from aifactory_cli.states import from_slurm, summarise
from aifactory_cli.transport import CommandResult

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"
IDS = dict(line.split("=", 1) for line in (DATA / "ids.txt").read_text().split())


def _rows(name: str) -> dict:
    return slurm.latest_rows(slurm.parse_sacct((DATA / name).read_text()))


def test_final_states_from_sacct() -> None:
    rows = _rows("sacct_final.txt")
    got = {k: rows[(IDS[k], None)] for k in ("ok", "fail3", "running", "held", "timeout", "dep", "gpu")}
    assert (got["ok"].state, got["ok"].exit_code) == ("COMPLETED", 0)
    assert (got["fail3"].state, got["fail3"].exit_code) == ("FAILED", 3)
    assert got["running"].state == "CANCELLED" and got["running"].raw_state.startswith("CANCELLED by ")
    assert got["held"].state == "CANCELLED"  # cancelled while pending...
    assert got["held"].start is None  # ...never started (sacct reports the cancel time as Start)
    assert got["running"].start is not None
    assert got["timeout"].state == "TIMEOUT"
    assert (got["dep"].state, got["dep"].reason) == ("PENDING", "DependencyNeverSatisfied")
    assert got["gpu"].state == "COMPLETED"


def test_array_tasks_are_tracked_per_task() -> None:
    rows = _rows("sacct_final.txt")
    tasks = [rows[(IDS["array"], i)] for i in range(4)]
    assert [t.state for t in tasks] == ["COMPLETED"] * 4
    # the last task keeps the array's id as its raw id, the others get new ones
    assert tasks[3].raw_id == IDS["array"] and tasks[0].raw_id != IDS["array"]
    # a held array not yet split appears as ID_[0-3%2]: expanded per task
    live = _rows("sacct_live.txt")
    assert [live[(IDS["array_held"], i)].reason for i in range(4)] == ["JobHeldUser"] * 4


def test_steps_are_not_jobs() -> None:
    text = (DATA / "sacct_final_steps.txt").read_text()
    assert ".batch" in text  # the recording has step rows...
    rows = slurm.parse_sacct("\n".join(f"{line}|x|x|x|x|x|x" for line in text.splitlines()))
    assert all(r.task is None or isinstance(r.task, int) for r in rows)
    assert not any("." in r.job_id for r in rows)  # ...and none of them become jobs


def test_squeue_live_output() -> None:
    rows = slurm.latest_rows(slurm.parse_squeue((DATA / "squeue_live.txt").read_text()))
    assert rows[(IDS["running"], None)].state == "RUNNING"
    assert (rows[(IDS["held"], None)].state, rows[(IDS["held"], None)].reason) == ("PENDING", "JobHeldUser")
    assert rows[(IDS["fail3"], None)].reason == "NonZeroExitCode"
    assert rows[(IDS["array_held"], 2)].state == "PENDING"


def test_merge_prefers_squeue_for_live_and_sacct_for_ended() -> None:
    queue = slurm.parse_squeue((DATA / "squeue_live.txt").read_text())
    acct = slurm.parse_sacct((DATA / "sacct_live.txt").read_text())
    rows = slurm.merge_rows(queue, acct)
    assert rows[(IDS["held"], None)].reason == "JobHeldUser"
    assert (rows[(IDS["fail3"], None)].state, rows[(IDS["fail3"], None)].exit_code) == ("FAILED", 3)


def test_status_command_output_split() -> None:
    text = "1|RUNNING|None|x\n\n@@AIF-SACCT@@ 0\n1|1|RUNNING|0:0|None|x|Unknown|00:00:01|\n"
    queue, rc, acct = slurm.split_status_output(text)
    assert queue.startswith("1|RUNNING") and rc == 0 and acct.startswith("1|1|RUNNING")


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("CANCELLED by 1001", "CANCELLED"),
        ("COMPLETED", "COMPLETED"),
        ("PD", "PENDING"),
        ("COMPLETING", "RUNNING"),
        ("OUT_OF_MEMORY", "OUT_OF_MEMORY"),
        ("NODE_FAIL", "NODE_FAIL"),
        ("PREEMPTED", "PREEMPTED"),
        ("BOOT_FAIL", "NODE_FAIL"),
        ("DEADLINE", "TIMEOUT"),
        ("REQUEUED", "PENDING"),
        ("weird", "UNKNOWN"),
        ("", "UNKNOWN"),
    ],
)
def test_state_mapping(raw: str, state: str) -> None:
    assert from_slurm(raw) == state


def test_summary_never_invents_completed() -> None:
    assert summarise(["COMPLETED", "UNKNOWN"]) == "UNKNOWN"
    assert summarise(["COMPLETED", "FAILED"]) == "FAILED"
    assert summarise(["COMPLETED", "RUNNING", "PENDING"]) == "RUNNING"
    assert summarise([]) == "UNKNOWN"


def test_sbatch_ok() -> None:
    assert slurm.parse_sbatch(CommandResult(0, (DATA / "sbatch_ok.txt").read_text(), "")).isdigit()
    assert slurm.parse_sbatch(CommandResult(0, "123;lumi\n", "")) == "123"


def _rejections() -> dict[str, tuple[int, str]]:
    out = {}
    for block in (DATA / "sbatch_rejected.txt").read_text().split("### ")[1:]:
        head, _, body = block.partition("\n")
        label, rc = head.split(" rc=")
        out[label] = (int(rc), body)
    return out


@pytest.mark.parametrize(
    ("label", "needle"),
    [
        ("bad-account", "Invalid account"),
        ("bad-partition", "invalid partition"),
        ("too-many-gpus", "node configuration is not available"),
        ("time-over-limit", "time limit is invalid"),
        ("bad-feature", "Invalid feature"),
        # sbatch's own option parser (recorded from Slurm 22.05): nothing was queued either
        ("unknown-option", "unrecognized option '--bogus-opt=1'"),
        ("ambiguous-option", "is ambiguous"),
    ],
)
def test_sbatch_rejections_are_bad_input_with_a_hint(label: str, needle: str) -> None:
    rc, stderr = _rejections()[label]
    with pytest.raises(SubmitRejected) as info:
        slurm.parse_sbatch(CommandResult(rc, "", stderr))
    assert needle.lower() in info.value.message.lower()
    assert info.value.exit_code == 2


def test_sbatch_other_failure_is_remote_error() -> None:
    with pytest.raises(RemoteError) as info:
        slurm.parse_sbatch(
            CommandResult(1, "", "sbatch: error: Slurm controller not responding, sleeping and retrying.")
        )
    assert info.value.exit_code == 3


def test_array_range_expansion() -> None:
    assert slurm.expand_array_range("0-3%2") == [0, 1, 2, 3]
    assert slurm.expand_array_range("1,4-6,9") == [1, 4, 5, 6, 9]
    assert slurm.split_job_id("12_[0-2]") == [("12", 0), ("12", 1), ("12", 2)]
    assert slurm.split_job_id("12.batch") == []


def test_epoch_times_become_utc_with_an_offset() -> None:
    """status_command asks for SLURM_TIME_FORMAT=%s (recorded from the test bed, whose clock is UTC:
    the default format printed 2026-11-22T06:05:24 for the same job), so no time is ambiguous."""
    assert "export SLURM_TIME_FORMAT=%s;" in slurm.status_command(["1"])
    (row,) = slurm.parse_sacct((DATA / "sacct_epoch.txt").read_text())
    assert (row.state, row.start, row.end) == ("COMPLETED", "2026-11-22T06:05:24+00:00", "2026-11-22T06:05:27+00:00")
    (live,) = slurm.parse_squeue("8772|RUNNING|None|1795327524\n")
    assert live.start == "2026-11-22T06:05:24+00:00"
    (held,) = slurm.parse_squeue("8771|PENDING|JobHeldUser|N/A\n")
    assert held.start is None
