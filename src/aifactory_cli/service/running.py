"""The one wait for a job to run, shared by `exec`, `shell` and `forward`: they all need the job's
allocation, so a pending job is waited for (or refused with --no-wait) and an ended one refused.

Exit codes (docs/contract.md): 4 for a job that has ended, was never accepted, or is still pending
with --no-wait (there is nothing to reach yet; the same code as "ended", so a script that polls with
--no-wait tells "later" from "bad input", exit 2)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aifactory_cli import states
from aifactory_cli.errors import NotFound
from aifactory_cli.jobs.model import Job

if TYPE_CHECKING:
    from aifactory_cli.service.session import Service

WAIT_POLL = 2.0  # seconds between two looks at a pending job (the profile's poll_interval if longer)


class JobNotRunning(NotFound):
    """The job has ended, was never accepted, or has not started and --no-wait was given (exit 4)."""


def wait_running(
    svc: Service,
    job: Job,
    *,
    wait: bool,
    what: str,
    on_wait: Callable[[Job], None] | None = None,
    poll: float | None = None,
) -> Job:
    """`job`, RUNNING now (asked of its site each time, not from the store). While it is pending:
    `on_wait(job)` on each new state or reason (default: a line on stderr with the time waited),
    then a pause of `poll` s (default: WAIT_POLL, or the profile's poll_interval if longer).
    `what` finishes "there is nothing to ... " in the refusals ("run a step in", "forward to")."""
    started = time.monotonic()
    seen: tuple[str, str | None] | None = None
    while True:
        if not job.is_final:
            svc.refresh([job], force=True)
        if job.is_final:
            code = f", exit {job.exit_code}" if job.exit_code is not None else ""
            raise JobNotRunning(
                f"job {job.id} ({job.name}) has ended ({job.state}{code}): there is nothing to {what}",
                f"submit it again (`aifactory rerun {job.id}`), or pick a running job "
                "(`aifactory list --state RUNNING`)",
            )
        if job.state == states.RUNNING:
            return job
        if job.state == states.PREPARED or not job.slurm_job_id:
            raise JobNotRunning(
                f"job {job.id} ({job.name}) was never accepted by {job.site} ({job.state})",
                f"`aifactory status {job.id}` says what became of it",
            )
        if not wait:
            why = f": {job.reason}" if job.reason else ""
            raise JobNotRunning(
                f"job {job.id} ({job.name}) has not started yet ({job.state}{why}) and --no-wait was given",
                "leave out --no-wait to wait for it to start",
            )
        if (job.state, job.reason) != seen:
            seen = (job.state, job.reason)
            if on_wait is not None:
                on_wait(job)
            else:
                why = f", {job.reason}" if job.reason else ""
                svc.notify(
                    f"waiting for job {job.id} ({job.name}) to start: {job.state}{why} "
                    f"({time.monotonic() - started:.0f} s; Ctrl-C stops waiting, the job stays queued)"
                )
        time.sleep(poll if poll is not None else max(WAIT_POLL, svc.profile(job.site).profile.poll_interval or 0.0))
