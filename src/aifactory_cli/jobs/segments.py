"""A checkpointed run's segments, read back from the `segments.tsv` its batch script writes
(templates/slurm/segments.sh.j2): one logical job whose Slurm jobs (a requeued one, or a chain of
dependent ones) are its segments. Pure: status, sync and the tests read the same text."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from aifactory_cli import states

# what the script decided after a segment -> the segment's state
_OUTCOME_STATE = {
    "done": states.COMPLETED,  # the program finished: exit 0, not signalled
    "next": states.COMPLETED,  # signalled at its time limit, saved: the next segment goes on
    "failed": states.FAILED,  # a non-zero exit not caused by the signal: no further segment
    "timeout": states.TIMEOUT,  # signalled, and the run's total time is used up
    "retries": states.FAILED,  # restarted more often than `retries:` allows
    "cancelled": states.CANCELLED,  # `aifactory cancel`: no segment follows
}
FINAL_OUTCOMES = frozenset({"done", "failed", "timeout", "retries", "cancelled"})
RESTARTED = "restarted"  # a start that never ended, followed by another: node failure, preemption


@dataclass
class Segment:
    segment: int
    restarts: int
    slurm_job_id: str
    state: str
    started_at: str | None = None
    ended_at: str | None = None
    exit_code: int | None = None
    outcome: str | None = None  # done / next / failed / timeout / retries / restarted; None: running

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _iso(epoch: str) -> str | None:
    try:
        return dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc).isoformat()
    except (ValueError, OverflowError, OSError):
        return None


def parse(text: str) -> list[Segment]:
    """The attempts of a run in order: each `start` line opens one, its `end` line closes it; a start
    followed by another start died (RESTARTED). Unreadable lines are skipped."""
    out: list[Segment] = []
    for line in text.splitlines():
        f = line.rstrip("\n").split("\t")
        if len(f) < 5 or not f[1].isdigit() or not f[2].isdigit():
            continue
        if f[0] == "start":
            if out and out[-1].outcome is None:
                out[-1].outcome, out[-1].state = RESTARTED, states.NODE_FAIL
            out.append(Segment(int(f[1]), int(f[2]), f[3], states.RUNNING, started_at=_iso(f[4])))
        elif f[0] == "end" and len(f) >= 7 and out:
            seg = out[-1]
            seg.outcome = f[5]
            seg.state = _OUTCOME_STATE.get(f[5], states.UNKNOWN)
            seg.ended_at = _iso(f[4])
            seg.exit_code = int(f[6]) if f[6].lstrip("-").isdigit() else None
    return out


@dataclass(frozen=True)
class RunView:
    """What the segments say about the whole run."""

    state: str | None  # the run's final state, or None while it goes on (Slurm's state then decides)
    exit_code: int | None
    reason: str | None
    between: bool  # the last segment ended with `next` and the next has not started yet


def view(segments: list[Segment]) -> RunView:
    if not segments:
        return RunView(None, None, None, False)
    last = segments[-1]
    if last.outcome in FINAL_OUTCOMES:
        reason = {
            "done": f"done after {len(segments)} segment(s)",
            "failed": f"the program failed in segment {last.segment}",
            "timeout": f"the run's time was used up after segment {last.segment}",
            "retries": f"restarted {last.restarts} times, more than retries allows",
            "cancelled": f"cancelled in segment {last.segment}",
        }[last.outcome or "done"]
        return RunView(last.state, last.exit_code, reason, False)
    return RunView(None, None, None, last.outcome == "next")


def combine(segments: list[Segment], current_id: str | None, slurm_state: str | None, reason: str | None) -> str:
    """The run's state from its segments and Slurm's state of its current job (`slurm_state`, a
    normalised state, or None when Slurm does not know it): the log decides a run that ended; while it
    goes on, Slurm's live state does; a segment that handed over reads as PENDING until the next
    starts; a current job Slurm ended without the log saying so (cancelled, NODE_FAIL with no retry
    left) ends the run in Slurm's state. The last running segment takes that state too."""
    run = view(segments)
    if run.state is not None:
        return run.state
    if slurm_state is None:
        return states.PENDING if run.between else states.UNKNOWN
    if slurm_state in states.FINAL_STATES and run.between:
        return states.PENDING  # the next segment is being queued (a requeue, or a new job's id not read yet)
    if segments and segments[-1].outcome is None and slurm_state in states.FINAL_STATES:
        segments[-1].state = slurm_state
        if current_id and segments[-1].slurm_job_id != current_id:
            segments[-1].state = states.UNKNOWN
    return slurm_state


def read_command(workdirs: list[str]) -> str:
    """One remote command that prints, for each job dir, its segments.tsv and its slurm_job_id (the
    run's current Slurm job: a chain's newest segment), as batch sections `logN` and `idN`."""
    import shlex

    from aifactory_cli.jobs import jobdir
    from aifactory_cli.transport import batch

    commands: dict[str, str] = {}
    for i, workdir in enumerate(workdirs):
        base = shlex.quote(workdir.rstrip("/"))
        commands[f"log{i}"] = f"cat {base}/{jobdir.SEGMENTS} 2>/dev/null; true"
        commands[f"id{i}"] = f"cat {base}/{jobdir.SLURM_JOB_ID} 2>/dev/null; true"
    return batch.command(commands)


def parse_read(text: str, count: int) -> list[tuple[list[Segment], str | None] | None]:
    """`read_command`'s stdout -> per job dir (segments, current Slurm id), None where it was not read."""
    from aifactory_cli.transport import batch

    found = batch.sections(text)
    out: list[tuple[list[Segment], str | None] | None] = []
    for i in range(count):
        log, ident = found.get(f"log{i}"), found.get(f"id{i}")
        if log is None or ident is None:
            out.append(None)
            continue
        current = ident.output.strip().split(";")[0] or None
        out.append((parse(log.output), current if current and current.isdigit() else None))
    return out
