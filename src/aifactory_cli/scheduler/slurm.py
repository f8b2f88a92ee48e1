"""Slurm: ALL of aifactory's Slurm command text, as pure functions that build commands and parse
real Slurm output (tested on output recorded from the test bed in tests/data/). Commands that
answer together in one round trip are built with `transport.batch`."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from aifactory_cli import states
from aifactory_cli.errors import RemoteError, SubmitRejected
from aifactory_cli.transport import CommandResult, batch

SACCT_FIELDS = ("JobID", "JobIDRaw", "State", "ExitCode", "Reason", "Start", "End", "Elapsed", "Comment")
SQUEUE_FORMAT = "%i|%T|%r|%S"


@dataclass
class SlurmRow:
    """One job or array task as Slurm reports it."""

    job_id: str  # base id (the array's id for array tasks)
    task: int | None  # array task index, None for plain jobs
    raw_state: str
    state: str
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    start: str | None = None  # the real start; None until the job has started
    end: str | None = None
    comment: str | None = None
    raw_id: str | None = None
    expected_start: str | None = None  # Slurm's estimate of the start while the job is pending


# --- submit ----------------------------------------------------------------------------------------


def sbatch_command(script: str | None, test_only: bool = False) -> list[str]:
    """sbatch for `script` (None: the script comes on stdin)."""
    return ["sbatch", "--test-only" if test_only else "--parsable", *([script] if script else [])]


def submit_steps(script: str, id_file: str) -> list[str]:
    """Shell steps (joined with `&&`, run in the job dir) that submit `script`, keep the job id in
    `id_file` and print it."""
    return [
        "_aif_id=$(" + shlex.join(sbatch_command(script)) + ")",
        f"printf '%s\\n' \"$_aif_id\" > {shlex.quote(id_file)}",
        "printf '%s\\n' \"$_aif_id\"",
    ]


def sbatch_spoke(stderr: str) -> bool:
    """Whether sbatch itself reported something (else the steps before it failed)."""
    return "sbatch" in stderr


_JOB_ID = re.compile(r"^(\d+)(?:;\S+)?$")


def parse_sbatch(result: CommandResult) -> str:
    """The job id from `sbatch --parsable` (`123` or `123;cluster`), or a clear error."""
    if result.rc == 0:
        for line in reversed(result.stdout.strip().splitlines()):
            m = _JOB_ID.match(line.strip())
            if m:
                return m.group(1)
        raise RemoteError(f"sbatch printed no job id: {result.stdout.strip()!r} {result.stderr.strip()!r}")
    said = sbatch_error(result.stderr)  # None: sbatch printed no error of its own
    message = said or result.stderr.strip() or f"exit code {result.rc}"
    lowered = message.lower()
    hint = None
    if "invalid account" in lowered:
        hint = "check the account (--account, AIFACTORY_ACCOUNT or the config file): is it one of your projects?"
    elif "invalid partition" in lowered:
        hint = "check the partition name against `aifactory sites show SITE`"
    elif "time limit" in lowered:
        hint = "lower resources.time to fit the partition's limit"
    elif "node configuration is not available" in lowered:
        hint = "the partition cannot give this shape (GPUs, cores or memory per node)"
    elif "unrecognized option" in lowered or "is ambiguous" in lowered:
        hint = "check the option names under `slurm:` (spec or profile) against `sbatch --help` on the site"
    rejected = ("invalid", "not available", "limit", "rejected", "denied", "qos", "unrecognized option", "is ambiguous")
    if any(k in lowered for k in rejected):
        raise SubmitRejected(f"Slurm rejected the job: {message}", hint)
    if "unable to contact slurm controller" in lowered:
        exc = RemoteError(
            f"sbatch failed: {message}",
            "the Slurm controller is down or unreachable from the login node; nothing was queued, try again later",
            queued="no",
        )
        raise exc
    # sbatch said why it refused (its own option checks, or the controller's answer, e.g. "More
    # processors requested than permitted"): a rejection, nothing queued. Only a failed conversation
    # with the controller (e.g. "Socket timed out on send/recv operation") may still have queued it.
    if said is not None and not any(k in lowered for k in _CONVERSATION_FAILED):
        raise SubmitRejected(f"Slurm rejected the job: {message}", hint)
    raise RemoteError(f"sbatch failed: {message}", hint)


# sbatch's errors that say the controller's answer was lost, not that it refused the job
_CONVERSATION_FAILED = (
    "socket timed out",
    "not responding",
    "sleeping and retrying",
    "temporarily unable",
    "timed out",
    "zero bytes were transmitted or received",
    "communication connection failure",
    "connection refused",
    "connection reset",
    "slurm_receive_msg",
    "slurm_send_recv",
    "protocol authentication error",
    "unexpected message received",
)


def sbatch_error(stderr: str) -> str | None:
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("sbatch: error:"):
            text = line[len("sbatch: error:") :].strip()
            if text.startswith("Batch job submission failed:"):
                text = text[len("Batch job submission failed:") :].strip()
            return text
    return None


# --- status ----------------------------------------------------------------------------------------


def sacct_command(job_ids: list[str]) -> list[str]:
    return [
        "sacct",
        "--parsable2",
        "--noheader",
        "--allocations",
        "--duplicates",
        f"--format={','.join(SACCT_FIELDS)}",
        f"--jobs={','.join(job_ids)}",
    ]


def squeue_command(job_ids: list[str], only_job_state: bool = False) -> list[str]:
    """--states=all: also the jobs that ended in the last MinJobAge seconds. `only_job_state`
    (Slurm 23.11+): a lighter request for slurmctld that gives the id and state only (the reason
    prints as None, the start as N/A); for jobs known to be running, whose start sacct has."""
    return [
        "squeue",
        *(["--only-job-state"] if only_job_state else []),
        "--noheader",
        "--array",
        "--states=all",
        f"--format={SQUEUE_FORMAT}",
        f"--jobs={','.join(job_ids)}",
    ]


# times as epoch seconds: Slurm prints local time without an offset otherwise (and truncates a
# longer strftime format to the column width), so a job's start would be ambiguous
_EPOCH = "SLURM_TIME_FORMAT=%s "


def status_command(job_ids: list[str], only_job_state: bool = False) -> str:
    """squeue then sacct for `job_ids`, in one remote command (one round trip); squeue's errors
    are dropped, sacct's go to stderr."""
    return batch.command(
        {
            "squeue": _EPOCH + shlex.join(squeue_command(job_ids, only_job_state)) + " 2>/dev/null",
            "sacct": _EPOCH + shlex.join(sacct_command(job_ids)),
        }
    )


def split_status_output(text: str) -> tuple[str, int, str, int]:
    """(squeue output, its exit code, sacct output, its exit code) from `status_command`'s stdout;
    a missing part counts as failed (exit code 1)."""
    parts = batch.sections(text)
    missing = batch.Section("", "", 1)
    queue, acct = parts.get("squeue", missing), parts.get("sacct", missing)
    return queue.output, queue.rc, acct.output, acct.rc


def merge_rows(
    queue: list[SlurmRow], acct: list[SlurmRow], acct_ok: bool = True
) -> dict[tuple[str, int | None], SlurmRow]:
    """One row per (job, task): sacct for ended jobs (exit codes), squeue for live ones (reasons).

    A job that squeue already reports ended but sacct does not yet (slurmdbd lags ~1 s) stays
    RUNNING until sacct has its exit code, unless accounting is unavailable altogether.
    """
    a = latest_rows(acct)
    q = latest_rows(queue)
    out: dict[tuple[str, int | None], SlurmRow] = {}
    for key in {*a, *q}:
        ar, qr = a.get(key), q.get(key)
        lagging = False
        if ar is not None and (qr is None or ar.state in states.FINAL_STATES):
            if qr is not None and qr.reason:
                # squeue's reason is the current one (e.g. DependencyNeverSatisfied); sacct may keep
                # the reason from when the job was last pending (e.g. Dependency)
                ar.reason = qr.reason
            row = ar
        elif qr is not None:
            if ar is not None:
                qr.exit_code, qr.signal, qr.raw_id = ar.exit_code, ar.signal, ar.raw_id
                qr.start = qr.start or ar.start
            lagging = acct_ok and qr.state in states.FINAL_STATES
            row = qr
        else:
            continue
        out[key] = truthful(row)
        if lagging:
            row.state = states.RUNNING
            row.reason = f"{row.raw_state} in squeue, waiting for accounting"
            row.exit_code = row.signal = None
    return out


# Slurm's reason says why a job waits; after it ends, only a failure's reason (NonZeroExitCode,
# JobLaunchFailure, ...) still explains something. A cancelled job keeps its last pending reason
# (JobHeldUser, BeginTime) in squeue and sacct: stale, so it is dropped, unless it is why Slurm
# cancelled it (a failed afterok dependency with --kill-on-invalid-dep).
_REASON_STATES = frozenset({states.PENDING, states.FAILED, states.NODE_FAIL, states.OUT_OF_MEMORY})
_CANCEL_REASONS = frozenset({"DependencyNeverSatisfied"})
# ended states whose exit code is the program's own: a cancelled, timed-out or preempted job shows
# Slurm's `0:0` (or `0:15`) though the program never finished, so only a non-zero code is kept
_OWN_EXIT_STATES = frozenset({states.COMPLETED, states.FAILED})


def truthful(row: SlurmRow) -> SlurmRow:
    """Columns that say only what is known: a real start only once started (Slurm's estimate of
    a pending job's start goes to `expected_start`), an exit code only once ended (and, for a job
    that was cancelled or ran out of time, only when the program itself exited non-zero), a
    reason only while pending or for a failure."""
    if row.state == states.PENDING:
        if row.start and not row.expected_start:
            row.expected_start = row.start
        row.start = None
    else:
        row.expected_start = None
    if row.state not in states.FINAL_STATES:
        row.exit_code = row.signal = None
    elif row.state not in _OWN_EXIT_STATES and not row.exit_code:
        row.exit_code = None
    if row.state not in _REASON_STATES and not (row.state == states.CANCELLED and row.reason in _CANCEL_REASONS):
        row.reason = None
    return row


def killed_for_dependency(row: SlurmRow, depends: bool) -> SlurmRow:
    """A job Slurm cancelled itself before it started (sacct: `CANCELLED`, no "by UID") when it had a
    dependency: --kill-on-invalid-dep (every dependent job) after its afterok parent failed. Once squeue
    forgot it, sacct's reason is stale: `Dependency` (22.05; parse_sacct) or None (23.02+; recorded).
    squeue's rows (no raw_id) never say who cancelled, so they are left as they are."""
    if depends and row.raw_id and row.raw_state == "CANCELLED" and row.start is None:
        row.reason = row.reason or "DependencyNeverSatisfied"
    return row


def _exit(text: str) -> tuple[int | None, int | None]:
    if not text or ":" not in text:
        return None, None
    rc, sig = text.split(":", 1)
    try:
        return int(rc), int(sig)
    except ValueError:
        return None, None


def _none(text: str) -> str | None:
    return None if text in ("", "None", "Unknown", "N/A", "(null)") else text


def _time(text: str) -> str | None:
    """A Slurm time as ISO 8601: epoch seconds (SLURM_TIME_FORMAT=%s) become UTC with an offset;
    the default format (the cluster's local time, no offset) is kept as Slurm printed it."""
    value = _none(text.strip())
    if value is not None and value.isdigit():
        import datetime as dt

        return dt.datetime.fromtimestamp(int(value), tz=dt.timezone.utc).isoformat()
    return value


_ARRAY = re.compile(r"^(\d+)_(\d+)$")
_ARRAY_PENDING = re.compile(r"^(\d+)_\[(.+)\]$")


def expand_array_range(spec: str) -> list[int]:
    """`0-3,7%2` -> [0, 1, 2, 3, 7]."""
    spec = spec.split("%", 1)[0]
    out: list[int] = []
    for part in spec.split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            step = 1
            if ":" in hi:
                hi, st = hi.split(":", 1)
                step = int(st)
            out.extend(range(int(lo), int(hi) + 1, step))
        else:
            out.append(int(part))
    return out


def split_job_id(job_id: str) -> list[tuple[str, int | None]]:
    """`123` -> [(123, None)]; `123_4` -> [(123, 4)]; `123_[0-3]` -> [(123,0)..(123,3)]; steps -> []."""
    if "." in job_id:
        return []  # a step (`123.batch`, `123.0`), not a job
    m = _ARRAY.match(job_id)
    if m:
        return [(m.group(1), int(m.group(2)))]
    m = _ARRAY_PENDING.match(job_id)
    if m:
        return [(m.group(1), i) for i in expand_array_range(m.group(2))]
    if job_id.isdigit():
        return [(job_id, None)]
    return []


def parse_sacct(text: str) -> list[SlurmRow]:
    """Rows of `sacct --parsable2 --noheader --allocations --format=<SACCT_FIELDS>`."""
    rows: list[SlurmRow] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < len(SACCT_FIELDS):
            continue
        job_id, raw_id, raw_state, exit_code, reason, start, end, elapsed = parts[:8]
        if raw_state.startswith("CANCELLED") and elapsed in ("00:00:00", "0:00") and start == end:
            start = "None"  # cancelled while pending: Slurm sets Start to the cancel time; it never ran
        if raw_state == "CANCELLED" and _none(start) is None and reason == "Dependency":  # killed_for_dependency
            reason = "DependencyNeverSatisfied"
        comment = "|".join(parts[8:])  # a comment may itself contain '|'
        rc, sig = _exit(exit_code)
        for base, task in split_job_id(job_id):
            rows.append(
                truthful(
                    SlurmRow(
                        job_id=base,
                        task=task,
                        raw_state=raw_state,
                        state=states.from_slurm(raw_state),
                        exit_code=rc,
                        signal=sig,
                        reason=_none(reason),
                        start=_time(start),
                        end=_time(end),
                        comment=_none(comment),
                        raw_id=raw_id,
                    )
                )
            )
    return rows


def parse_squeue(text: str) -> list[SlurmRow]:
    rows: list[SlurmRow] = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3:
            continue
        job_id, raw_state, reason = parts[:3]
        start = parts[3] if len(parts) > 3 else ""
        for base, task in split_job_id(job_id):
            rows.append(
                truthful(
                    SlurmRow(
                        job_id=base,
                        task=task,
                        raw_state=raw_state,
                        state=states.from_slurm(raw_state),
                        reason=_none(reason),
                        start=_time(start),
                    )
                )
            )
    return rows


def latest_rows(rows: list[SlurmRow]) -> dict[tuple[str, int | None], SlurmRow]:
    """One row per (job, task): with --duplicates a requeued job has several; the last one wins."""
    out: dict[tuple[str, int | None], SlurmRow] = {}
    for row in rows:
        out[(row.job_id, row.task)] = row
    return out


# --- cancel ----------------------------------------------------------------------------------------


def scancel_command(job_ids: list[str]) -> list[str]:
    return ["scancel", *job_ids]


# --- lookups by token (idempotent submission, sync) ------------------------------------------------


def token_of(comment: str | None) -> str | None:
    if comment and comment.startswith("aifactory:"):  # the token, then the user's own comment after ';'
        return comment[len("aifactory:") :].split(";", 1)[0].strip() or None
    return None


def job_id_of(raw: str) -> str | None:
    """The base job id of `123`, `123_4` or `123_[0-3]`; None for anything else."""
    base = raw.strip().split("_")[0]
    return base if base.isdigit() else None


# --- lookups of interrupted submissions -------------------------------------------------------------


def lookup_commands(since: str) -> dict[str, str]:
    """For a submission whose outcome is unknown: sbatch may have queued the job even when it
    reported a failure (e.g. "Socket timed out"). Live jobs carry the token in their comment
    (squeue); ended ones are found by their job dir (sacct's WorkDir, jobs since `since`)."""
    squeue = ["squeue", "--me", "--states=all", "--noheader", "--format=%i|%k"]
    sacct = ["sacct", "--noheader", "--parsable2", "--allocations", f"--starttime={since}", "--format=JobID,WorkDir"]
    return {"squeue": shlex.join(squeue) + " 2>/dev/null", "sacct": shlex.join(sacct) + " 2>/dev/null"}


def parse_comment_lookup(text: str) -> dict[str, str]:
    """`squeue --format=%i|%k` -> {aifactory token: job id}."""
    out = {}
    for line in text.splitlines():
        raw_id, _, comment = line.strip().partition("|")
        token, job_id = token_of(comment), job_id_of(raw_id)
        if token and job_id:
            out[token] = job_id
    return out


def parse_workdir_lookup(text: str) -> dict[str, str]:
    """`sacct --format=JobID,WorkDir` -> {job dir: job id} (the last job of a dir wins)."""
    out = {}
    for line in text.splitlines():
        raw_id, _, workdir = line.strip().partition("|")
        job_id = job_id_of(raw_id)
        if job_id and workdir:
            out[workdir.rstrip("/")] = job_id
    return out
