"""The pure Slurm parsers, fed with output recorded from the real test beds
(tests/data/record_slurm_output.py): every recorded-output test runs on each Slurm version
recorded (tests/data/slurm/22.05/ and 24.11/, see tests/unit/recorded.py)."""

from __future__ import annotations

import pytest
from recorded import VERSIONS, Recording, since

from aifactory_cli.errors import RemoteError, SubmitRejected
from aifactory_cli.scheduler import slurm
from aifactory_cli.states import from_slurm, summarise
from aifactory_cli.transport import CommandResult

# What changed in Slurm's own output between the recorded versions (aifactory's answers do not):
# from 23.02 on, sacct no longer keeps the reason of a held or dependency-blocked pending job
# (22.05: JobHeldUser / DependencyNeverSatisfied; 24.11: None); squeue still says it.
SACCT_DROPS_PENDING_REASON = "23.02"


@pytest.fixture(params=VERSIONS)
def rec(request: pytest.FixtureRequest) -> Recording:
    return Recording(request.param)


def test_both_versions_are_recorded() -> None:
    assert {"22.05", "24.11"} <= set(VERSIONS)
    for v in VERSIONS:
        assert Recording(v).text("version.txt").startswith(v + ".")


def test_final_states_from_sacct(rec: Recording) -> None:
    rows, ids = rec.sacct("sacct_final.txt"), rec.ids()
    got = {k: rows[(ids[k], None)] for k in ("ok", "fail3", "running", "held", "timeout", "dep", "gpu")}
    assert (got["ok"].state, got["ok"].exit_code) == ("COMPLETED", 0)
    assert (got["fail3"].state, got["fail3"].exit_code) == ("FAILED", 3)
    assert got["running"].state == "CANCELLED" and got["running"].raw_state.startswith("CANCELLED by ")
    assert got["held"].state == "CANCELLED"  # cancelled while pending...
    # ...never started (22.05's sacct reports the cancel time as Start, 24.11's says None)
    assert got["held"].start is None
    assert got["running"].start is not None
    assert got["timeout"].state == "TIMEOUT"
    assert got["gpu"].state == "COMPLETED"
    # a job whose dependency failed waits forever: sacct alone knows why only on 22.05
    dep_reason = None if since(rec.version, SACCT_DROPS_PENDING_REASON) else "DependencyNeverSatisfied"
    assert (got["dep"].state, got["dep"].reason, got["dep"].exit_code) == ("PENDING", dep_reason, None)


def test_array_tasks_are_tracked_per_task(rec: Recording) -> None:
    rows, ids = rec.sacct("sacct_final.txt"), rec.ids()
    tasks = [rows[(ids["array"], i)] for i in range(4)]
    assert [t.state for t in tasks] == ["COMPLETED"] * 4
    # the last task keeps the array's id as its raw id, the others get new ones
    assert tasks[3].raw_id == ids["array"] and tasks[0].raw_id != ids["array"]
    # a held array not yet split appears as ID_[0-3%2]: expanded per task
    live = rec.sacct("sacct_live.txt")
    held = "JobHeldUser" if not since(rec.version, SACCT_DROPS_PENDING_REASON) else None
    assert [(live[(ids["array_held"], i)].state, live[(ids["array_held"], i)].reason) for i in range(4)] == [
        ("PENDING", held)
    ] * 4


def test_steps_are_not_jobs(rec: Recording) -> None:
    text = rec.text("sacct_final_steps.txt")
    assert ".batch" in text  # the recording has step rows...
    rows = slurm.parse_sacct("\n".join(f"{line}|x|x|x|x|x|x" for line in text.splitlines()))
    assert all(r.task is None or isinstance(r.task, int) for r in rows)
    assert not any("." in r.job_id for r in rows)  # ...and none of them become jobs


def test_squeue_live_output(rec: Recording) -> None:
    rows, ids = slurm.latest_rows(slurm.parse_squeue(rec.text("squeue_live.txt"))), rec.ids()
    assert rows[(ids["running"], None)].state == "RUNNING"
    assert rows[(ids["running"], None)].start is not None and rows[(ids["running"], None)].exit_code is None
    assert (rows[(ids["held"], None)].state, rows[(ids["held"], None)].reason) == ("PENDING", "JobHeldUser")
    assert (rows[(ids["dep"], None)].state, rows[(ids["dep"], None)].reason) == ("PENDING", "DependencyNeverSatisfied")
    assert rows[(ids["fail3"], None)].reason == "NonZeroExitCode"
    assert [rows[(ids["array_held"], i)].reason for i in range(4)] == ["JobHeldUser"] * 4


def test_merge_takes_live_reasons_from_squeue_and_ended_jobs_from_sacct(rec: Recording) -> None:
    """squeue is the reliable source of a live job's reason (sacct dropped it after 22.05), sacct
    of an ended job's exit code; the raw values stay in the rows."""
    ids = rec.ids()
    queue = slurm.parse_squeue(rec.text("squeue_live.txt"))
    acct = slurm.parse_sacct(rec.text("sacct_live.txt"))
    raw_acct = slurm.latest_rows(slurm.parse_sacct(rec.text("sacct_live.txt")))
    rows = slurm.merge_rows(queue, acct)
    for key, reason in (("held", "JobHeldUser"), ("dep", "DependencyNeverSatisfied")):
        row = rows[(ids[key], None)]
        assert (row.state, row.reason, row.start, row.exit_code) == ("PENDING", reason, None, None), key
        assert row.raw_state == "PENDING"
    assert [rows[(ids["array_held"], i)].reason for i in range(4)] == ["JobHeldUser"] * 4
    if since(rec.version, SACCT_DROPS_PENDING_REASON):  # the merged reason came from squeue only
        assert raw_acct[(ids["held"], None)].reason is None
    assert (rows[(ids["fail3"], None)].state, rows[(ids["fail3"], None)].exit_code) == ("FAILED", 3)
    running = rows[(ids["running"], None)]
    assert (running.state, running.exit_code, running.reason) == ("RUNNING", None, None)
    assert running.start is not None


def test_epoch_times_of_the_status_command(rec: Recording) -> None:
    """status asks sacct for epoch seconds (SLURM_TIME_FORMAT=%s): the same instants as the default
    format printed (the beds' clocks are UTC), as UTC with an offset."""
    (row,) = slurm.parse_sacct(rec.text("sacct_epoch.txt"))
    final = rec.sacct("sacct_final.txt")[(rec.ids()["ok"], None)]
    assert (row.state, row.exit_code) == ("COMPLETED", 0)
    assert (row.start, row.end) == (f"{final.start}+00:00", f"{final.end}+00:00")


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


def test_lookup_of_interrupted_submissions_on_recorded_output(rec: Recording) -> None:
    """squeue comments and sacct WorkDirs, recorded from the test bed (record_slurm_output.py --quick):
    one job held (live), one ended, each with a token in its comment."""
    from aifactory_cli.transport import batch

    ids = rec.ids("lookup_ids.txt")
    answers = batch.sections(rec.text("lookup_live.txt"))
    by_token = slurm.parse_comment_lookup(answers["squeue"].output)
    assert by_token["tok-live"] == ids["live"] and by_token["tok-ended"] == ids["ended"]
    assert all(t and "(" not in t for t in by_token)  # `(null)` comments are not tokens
    by_dir = slurm.parse_workdir_lookup(answers["sacct"].output)
    assert by_dir["/home/hpcuser/aifactory/rec-lookup/ended-00000001"] == ids["ended"]
    assert all(v.isdigit() for v in by_dir.values())
    assert ids["live"] not in by_dir.values()  # the live (held) job is squeue's to tell


def test_lookup_parsers_on_made_up_lines() -> None:
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


def test_sbatch_ok(rec: Recording) -> None:
    assert slurm.parse_sbatch(CommandResult(0, rec.text("sbatch_ok.txt"), "")).isdigit()
    assert slurm.parse_sbatch(CommandResult(0, "123;lumi\n", "")) == "123"


REJECTION_CASES = [(v, label) for v in VERSIONS for label in Recording(v).rejections()]


@pytest.mark.parametrize(("version", "label"), REJECTION_CASES)
def test_every_recorded_refusal_is_exit_2_with_slurms_words(version: str, label: str) -> None:
    """The rejection table: each sbatch refusal recorded on each version -> SubmitRejected (exit 2)
    whose message is sbatch's own first error line; never 'sbatch failed' (exit 3)."""
    rc, stderr = Recording(version).rejections()[label]
    if rc == 0:  # this version queued it (22.05 accepts a dependency on a job it does not know)
        assert (version, label) == ("22.05", "bad-dependency")
        return
    with pytest.raises(SubmitRejected) as info:
        slurm.parse_sbatch(CommandResult(rc, "", stderr))
    said = slurm.sbatch_error(stderr) or stderr.strip()
    assert info.value.exit_code == 2
    assert info.value.message == f"Slurm rejected the job: {said}"


@pytest.mark.parametrize(
    ("label", "needle"),
    [
        ("bad-account", "Invalid account"),
        ("bad-partition", "invalid partition"),
        ("too-many-gpus", "node configuration is not available"),
        ("time-over-limit", "time limit is invalid"),
        ("bad-feature", "Invalid feature"),
        ("too-many-nodes", "Node count specification invalid"),
        ("too-many-cpus", "More processors requested than permitted"),
        ("bad-qos", "Invalid qos"),
        ("bad-time-format", "Invalid --time specification"),
        # sbatch's own option parser: nothing was queued either
        ("unknown-option", "unrecognized option '--bogus-opt=1'"),
        ("ambiguous-option", "is ambiguous"),
    ],
)
def test_sbatch_rejections_are_bad_input_with_a_hint(rec: Recording, label: str, needle: str) -> None:
    rc, stderr = rec.rejections()[label]
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
    assert slurm.status_command(["1"]).count("SLURM_TIME_FORMAT=%s squeue") == 1
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


def test_a_job_slurm_killed_for_its_failed_dependency_keeps_its_reason_after_squeue_forgot_it(
    rec: Recording,
) -> None:
    """`--kill-on-invalid-dep=yes`: Slurm cancels a job whose afterok parent failed. Once squeue has
    forgotten it (MinJobAge), sacct says `CANCELLED` (a person's scancel: `CANCELLED by UID`) with the
    stale reason `Dependency` (22.05) or None (24.11); the job's own dependency says why there."""
    ids = rec.ids("killed_dep_ids.txt")
    rows = rec.sacct("sacct_killed_dep.txt")
    parent, killed, by_user = (rows[(ids[k], None)] for k in ("parent", "killed", "by_user"))
    assert (parent.state, parent.exit_code) == ("FAILED", 3)
    assert (killed.raw_state, killed.start) == ("CANCELLED", None)
    assert by_user.raw_state.startswith("CANCELLED by ") and by_user.reason is None
    sacct_alone = None if since(rec.version, SACCT_DROPS_PENDING_REASON) else "DependencyNeverSatisfied"
    assert killed.reason == sacct_alone
    # the store knows the job had a dependency: that decides it on every version
    assert slurm.killed_for_dependency(killed, depends=True).reason == "DependencyNeverSatisfied"
    assert slurm.killed_for_dependency(by_user, depends=True).reason is None  # a person cancelled it
    if sacct_alone is None:  # no dependency, no reason made up
        fresh = rec.sacct("sacct_killed_dep.txt")[(ids["killed"], None)]
        assert slurm.killed_for_dependency(fresh, depends=False).reason is None
    # while squeue still lists them it says why itself, and the merge keeps it
    merged = slurm.merge_rows(
        slurm.parse_squeue(rec.text("squeue_killed_dep.txt")), slurm.parse_sacct(rec.text("sacct_killed_dep.txt"))
    )
    assert merged[(ids["killed"], None)].reason == "DependencyNeverSatisfied"
    assert merged[(ids["by_user"], None)].reason is None
    # squeue's rows never say who cancelled: a squeue row alone is left as it is
    queue = slurm.latest_rows(slurm.parse_squeue(rec.text("squeue_killed_dep.txt")))
    assert slurm.killed_for_dependency(queue[(ids["by_user"], None)], depends=True).reason is None
