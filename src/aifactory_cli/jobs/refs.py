"""Which job a reference means: the one rule every command uses (through `Store.find`).

A reference is, in this order:
1. an exact local id: that job (an id always wins over a name);
2. `SITE:SLURM_JOB_ID`: that job;
3. a name and/or a prefix of ids:
   - a name of one job: that job;
   - a name of several jobs: the one that is live (PENDING or RUNNING) when exactly one is, else the
     newest; the choice is said in a note ("'train' is job 3f2a91c0 (newest of 3; others: ...)");
   - a name of several LIVE jobs: an error that lists them, since any pick would be a guess (and
     `cancel` of the wrong one, or the logs of the wrong one, loses work or misleads);
   - a prefix of ids only: the job when one id starts with it, else an error that lists them;
   - a name of some jobs and a prefix of the ids of others: an error that lists them.

Pure: it takes the candidate jobs (named, newest first; prefixed) and returns the choice.
"""

from __future__ import annotations

from dataclasses import dataclass

from aifactory_cli import states
from aifactory_cli.errors import BadInput, NotFound
from aifactory_cli.jobs.model import Job

# "live" for choosing among jobs of one name: waiting or running on the site. A PREPARED job (its
# submission still in doubt) or an UNKNOWN one (the site forgot it) does not make a name ambiguous.
CHOOSING_LIVE = frozenset({states.PENDING, states.RUNNING})


@dataclass
class Choice:
    job: Job
    note: str | None = None  # what was chosen among several, for stderr


def _describe(job: Job) -> str:
    return f"{job.id} ({job.site}, {job.state}, submitted {job.submitted_at or job.created_at})"


def _others(chosen: Job, jobs: list[Job], limit: int = 4) -> str:
    rest = [j for j in jobs if j.id != chosen.id]
    text = ", ".join(f"{j.id} {j.state}" for j in rest[:limit])
    return text + (f", and {len(rest) - limit} more" if len(rest) > limit else "")


def choose(ref: str, named: list[Job], prefixed: list[Job]) -> Choice:
    """The job `ref` means, given the jobs named `ref` (newest first) and those whose id starts
    with it. Raises BadInput when the choice would be a guess, NotFound when nothing matches."""
    named_ids = {j.id for j in named}
    by_prefix_only = [j for j in prefixed if j.id not in named_ids]
    if named and by_prefix_only:
        both = [*named, *by_prefix_only]
        raise BadInput(
            f"'{ref}' matches {len(both)} jobs: {', '.join(_describe(j) for j in both[:5])}"
            f" (a name of {len(named)} and the start of the id of {len(by_prefix_only)})",
            "use the job id instead",
        )
    if named:
        if len(named) == 1:
            return Choice(named[0])
        live = [j for j in named if j.state in CHOOSING_LIVE]
        if len(live) > 1:
            raise BadInput(
                f"'{ref}' names {len(live)} live jobs: {', '.join(_describe(j) for j in live[:8])}",
                f"use a job id (or SITE:SLURM_ID) to say which; `aifactory list --name {ref}` shows them all",
            )
        if live:
            chosen, why = live[0], f"the live one of {len(named)}"
        else:
            chosen, why = named[0], f"newest of {len(named)}"
        return Choice(chosen, f"note: '{ref}' is job {chosen.id} ({why}; others: {_others(chosen, named)})")
    if len(prefixed) == 1:
        return Choice(prefixed[0])
    if prefixed:
        raise BadInput(
            f"'{ref}' matches {len(prefixed)} jobs: {', '.join(_describe(j) for j in prefixed[:5])}",
            "use more of the job id",
        )
    raise NotFound(f"no tracked job '{ref}'", "`aifactory list` shows tracked jobs")
