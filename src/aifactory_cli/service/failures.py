"""What went wrong, in plain sight: for each failed job or sweep element, its exit code, the values
it ran with and the last lines of its stderr (what `submit --wait`, `wait` and `status` print)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aifactory_cli import states
from aifactory_cli.jobs import jobdir
from aifactory_cli.jobs.model import Job
from aifactory_cli.service import elements

if TYPE_CHECKING:
    from aifactory_cli.service.session import Service

TAIL_LINES = 12
TAIL_BYTES = 4000
MAX_SHOWN = 5  # failed elements shown in full; the rest are counted


@dataclass
class Failure:
    job: Job
    task: int | None  # the element, None for a plain job
    what: str  # `element 3 (LR=-1)` or ``
    state: str
    exit_code: int | None
    reason: str | None
    stderr_tail: str  # the last lines, or why they are not available
    stderr_path: str | None


def _failed(state: str) -> bool:
    return state in states.FINAL_STATES and state != states.COMPLETED


def collect(svc: Service, jobs: list[Job], max_shown: int = MAX_SHOWN) -> tuple[list[Failure], int]:
    """The failures to show (at most `max_shown` with their stderr) and how many more failed."""
    found: list[tuple[Job, int | None, str, int | None, str | None]] = []
    for job in jobs:
        if job.tasks:
            found += [(job, t.task_id, t.state, t.exit_code, t.reason) for t in job.tasks if _failed(t.state)]
        elif _failed(job.state):
            found.append((job, None, job.state, job.exit_code, job.reason))
    shown = []
    for job, task, state, code, reason in found[:max_shown]:
        tail, path = stderr_tail(svc, job, task)
        what = elements.describe(job, task) if task is not None else ""
        shown.append(Failure(job, task, what, state, code, reason, tail, path))
    return shown, len(found) - len(shown)


def stderr_tail(svc: Service, job: Job, task: int | None, lines: int = TAIL_LINES) -> tuple[str, str | None]:
    """The last `lines` lines of the job's (element's) stderr, read with one `tail` on the site."""
    if not job.workdir:
        return "(no job dir)", None
    path = posixpath.join(job.workdir, jobdir.log_name(stderr=True, task=task if job.array_size else None))
    try:
        result = svc.backend(job.site).transport.run(["tail", "-c", str(TAIL_BYTES), path])
    except Exception as exc:  # the failure is still reported without its log
        return f"(stderr not available: {exc})", path
    if not result.ok:
        return f"(stderr not available: {result.stderr.strip() or 'tail failed'})", path
    text = result.stdout.rstrip("\n")
    return "\n".join(text.splitlines()[-lines:]), path
