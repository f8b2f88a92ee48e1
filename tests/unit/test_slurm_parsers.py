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
    text = (
        "\n@@AIF@@ squeue\n1|RUNNING|None|x\n\n@@AIF@@ rc 0\n"
        "\n@@AIF@@ sacct\n1|1|RUNNING|0:0|None|x|Unknown|00:00:01|\n\n@@AIF@@ rc 1\n"
    )
    queue, queue_rc, acct, acct_rc = slurm.split_status_output(text)
    assert (queue, queue_rc) == ("1|RUNNING|None|x\n", 0)
    assert acct.startswith("1|1|RUNNING") and acct_rc == 1
    assert slurm.split_status_output("banner only") == ("", 1, "", 1)  # the shell never got there


def test_status_command_runs_squeue_then_sacct_in_epoch_time() -> None:
    command = slurm.status_command(["7", "8_1"])
    assert command.index("squeue") < command.index("sacct")
    assert command.count("SLURM_TIME_FORMAT=%s ") == 2 and "--jobs=7,8_1" in command


def test_submit_steps_keep_the_id_in_the_job_dir() -> None:
    steps = slurm.submit_steps("job.sh", "slurm_job_id")
    assert steps[0] == "_aif_id=$(sbatch --parsable job.sh)"
    assert steps[1].endswith("> slurm_job_id")
    assert slurm.sbatch_command(None, test_only=True) == ["sbatch", "--test-only"]


def test_lookup_of_interrupted_submissions_on_recorded_output() -> None:
    """squeue comments and sacct WorkDirs, recorded from the test bed (record_slurm_output.py --quick):
    one job held (live), one ended, each with a token in its comment."""
    from aifactory_cli.transport import batch

    ids = dict(line.split("=", 1) for line in (DATA / "lookup_ids.txt").read_text().split())
    answers = batch.sections((DATA / "lookup_live.txt").read_text())
    by_token = slurm.parse_comment_lookup(answers["squeue"].output)
    assert by_token["tok-live"] == ids["live"] and by_token["tok-ended"] == ids["ended"]
    assert all(len(t) > 3 for t in by_token)  # `(null)` comments are not tokens
    by_dir = slurm.parse_workdir_lookup(answers["sacct"].output)
    assert by_dir == {"/home/hpcuser/aifactory/rec-lookup/ended-00000001": ids["ended"]}
    assert slurm.parse_workdir_lookup("12_[0-3]|/w/\n12.batch|/w\nJobID|x\n") == {"/w": "12"}
    assert "--starttime=2026-01-02T03:04:05" in slurm.lookup_commands("2026-01-02T03:04:05")["sacct"]


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
    assert slurm.status_command(["1"]).count("SLURM_TIME_FORMAT=%s squeue") == 1
    (row,) = slurm.parse_sacct((DATA / "sacct_epoch.txt").read_text())
    assert (row.state, row.start, row.end) == ("COMPLETED", "2026-11-22T06:05:24+00:00", "2026-11-22T06:05:27+00:00")
    (live,) = slurm.parse_squeue("8772|RUNNING|None|1795327524\n")
    assert live.start == "2026-11-22T06:05:24+00:00"
    (held,) = slurm.parse_squeue("8771|PENDING|JobHeldUser|N/A\n")
    assert held.start is None


@pytest.mark.parametrize(
    "message",
    [
        "More processors requested than permitted",  # 3 nodes on a 2-node partition (22.05 and 24.11)
        "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)",
        "Requested partition configuration not available now",
        "Something Slurm says that aifactory has never seen",
    ],
)
def test_an_answer_from_slurm_is_a_rejection_whatever_its_words(message: str) -> None:
    with pytest.raises(SubmitRejected) as info:
        slurm.parse_sbatch(CommandResult(1, "", f"sbatch: error: Batch job submission failed: {message}\n"))
    assert info.value.exit_code == 2 and message in info.value.message


@pytest.mark.parametrize(
    "stderr",
    [
        "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
        "sbatch: error: Batch job submission failed: Zero Bytes were transmitted or received",
        "ssh: connection closed",
    ],
)
def test_a_lost_answer_is_not_a_rejection(stderr: str) -> None:
    with pytest.raises(RemoteError) as info:
        slurm.parse_sbatch(CommandResult(1, "", stderr))
    assert not isinstance(info.value, SubmitRejected) and info.value.exit_code == 3
