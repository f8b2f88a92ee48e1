"""Settling interrupted submissions: was the job queued?

The riskiest decision in aifactory, so it is taken in one place, by a pure function:

- a failed submission is dropped only when the error says for certain that Slurm queued nothing
  (`RemoteError.queued == "no"`: nothing was sent, or sbatch could not reach the controller);
  otherwise the job stays in the store, UNKNOWN and "in doubt";
- before anything is submitted again (and on `status`/`sync`), one remote command looks the jobs
  in doubt up (`lookup_command`): each job dir's `slurm_job_id` file (written right after sbatch),
  the tokens in the comments of the jobs `squeue` knows, and the job dirs `sacct` knows;
- `decide(jobs, parse_lookup(output))` then says, per job: queued (with its Slurm id), not queued,
  or unknown (squeue or sacct did not answer, so a queued job could not be seen: ask again later).
"""

from __future__ import annotations

import datetime as dt
import posixpath
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from aifactory_cli import states
from aifactory_cli.errors import NotFound, RemoteError
from aifactory_cli.jobs import jobdir
from aifactory_cli.jobs.model import Job
from aifactory_cli.jobs.store import Store
from aifactory_cli.scheduler import slurm
from aifactory_cli.transport import batch

if TYPE_CHECKING:
    from aifactory_cli.service.session import Service

STALE_PREPARED_SECONDS = 3600.0  # PREPARED for this long: the process that submitted it died

Outcome = Literal["queued", "not_queued", "unknown"]


@dataclass
class Lookup:
    """What the site says about the jobs in doubt (parsed from `lookup_command`'s output)."""

    marks: dict[str, str | None] = field(default_factory=dict)  # job id -> id in its job dir's slurm_job_id
    by_token: dict[str, str] = field(default_factory=dict)  # token (squeue comment) -> Slurm id
    by_workdir: dict[str, str] = field(default_factory=dict)  # job dir (sacct WorkDir) -> Slurm id
    # squeue AND sacct answered: a live job's token, or an ended job's dir, would have been seen
    queue_ok: bool = True


@dataclass(frozen=True)
class Decision:
    job: Job
    outcome: Outcome
    slurm_job_id: str | None = None


# --- the pure part --------------------------------------------------------------------------------------


def in_doubt(jobs: list[Job], now: dt.datetime) -> list[Job]:
    """Jobs whose submission was interrupted (flagged by the process that saw it), or that stayed
    PREPARED for an hour (that process died)."""
    out = []
    for job in jobs:
        if job.slurm_job_id or job.state not in (states.UNKNOWN, states.PREPARED):
            continue
        if job.extra.get("in_doubt") or (
            job.state == states.PREPARED
            and (now - dt.datetime.fromisoformat(job.created_at)).total_seconds() > STALE_PREPARED_SECONDS
        ):
            out.append(job)
    return out


def lookup_command(jobs: list[Job], scheduler: str) -> str:
    """One remote command (a `transport.batch` round trip): each job dir's `slurm_job_id`, and for
    Slurm the tokens of the jobs in squeue (sbatch may have queued a job even when it reported a
    failure, e.g. "Socket timed out") and the job dirs of the jobs sacct knows since the oldest one
    was created (ended ones): `scheduler.slurm.lookup_commands`."""
    commands = {
        f"id.{job.id}": f"cat {shlex.quote(posixpath.join(job.workdir, jobdir.SLURM_JOB_ID))} 2>/dev/null"
        for job in jobs
        if job.workdir
    }
    if scheduler == "slurm":
        commands.update(slurm.lookup_commands(since=min(j.created_at for j in jobs)[:19]))
    return batch.command(commands)


def parse_lookup(text: str, scheduler: str) -> Lookup:
    """`lookup_command`'s output. For Slurm, a squeue or sacct that did not answer (or a cut-off answer)
    leaves `queue_ok` False: a queued job could not have been seen."""
    answers = batch.sections(text)
    lookup = Lookup()
    for name, section in answers.items():
        if name.startswith("id."):
            value = section.output.strip()
            lookup.marks[name[3:]] = value if value.isdigit() else None
    if scheduler == "slurm":
        queue, acct = answers.get("squeue"), answers.get("sacct")
        # sacct matters too: a job that sbatch queued while reporting a failure may have ended already
        lookup.queue_ok = queue is not None and queue.ok and acct is not None and acct.ok
        lookup.by_token = slurm.parse_comment_lookup(queue.output) if queue else {}
        lookup.by_workdir = slurm.parse_workdir_lookup(acct.output) if acct else {}
    return lookup


def decide(jobs: list[Job], lookup: Lookup) -> list[Decision]:
    """Per job in doubt: the Slurm id it got (its job dir's mark, else its token in squeue, else its
    job dir in sacct), not queued when none of them knows it, unknown when squeue or sacct did not answer."""
    out = []
    for job in jobs:
        sid = lookup.marks.get(job.id) or lookup.by_token.get(job.token)
        if sid is None and job.workdir:
            mine = job.workdir.rstrip("/")
            # the stored job dir may be relative to $HOME; sacct's is absolute
            match = [s for d, s in lookup.by_workdir.items() if d == mine or d.endswith("/" + mine.lstrip("/"))]
            sid = match[-1] if match else None
        if sid is not None:
            out.append(Decision(job, "queued", sid))
        elif lookup.queue_ok:
            out.append(Decision(job, "not_queued"))
        else:
            out.append(Decision(job, "unknown"))
    return out


# --- recording --------------------------------------------------------------------------------------------


def mark_in_doubt(store: Store, job: Job, reason: str) -> None:
    store.update(job, state=states.UNKNOWN, reason=reason, extra={**job.extra, "in_doubt": True})


def submission_failed(store: Store, job: Job, exc: RemoteError) -> None:
    """After a failed submission: drop the job if Slurm certainly queued nothing, else keep it in doubt."""
    if exc.queued == "no":
        store.delete(job)
        return
    mark_in_doubt(store, job, f"submission outcome unknown: {exc.message}")
    exc.hint = (exc.hint + "; " if exc.hint else "") + (
        f"`aifactory status {job.id}` finds out whether it reached Slurm (it is never submitted twice)"
    )


def apply(store: Store, decisions: list[Decision]) -> None:
    for d in decisions:
        extra = {k: v for k, v in d.job.extra.items() if k != "in_doubt"}
        if d.outcome == "queued":
            store.update(
                d.job,
                slurm_job_id=d.slurm_job_id,
                state=states.PENDING,
                slurm_state=None,
                reason="recovered after an interrupted submission",
                extra=extra,
                submitted_at=d.job.submitted_at or d.job.created_at,
            )
        elif d.outcome == "not_queued":
            store.update(
                d.job,
                state=states.FAILED,
                reason="never submitted: the submission was interrupted before sbatch ran; submit it again",
                extra=extra,
            )


# --- the use case -------------------------------------------------------------------------------------


def settle(
    svc: Service,
    site: str,
    provenance: str | None = None,
    spec_path: str | None = None,
    spec_json: str | None = None,
) -> Job | None:
    """Look up interrupted submissions of `site` on the site (one remote command) and record what
    became of them. Returns the one for this spec (same provenance hash, path and content) if it was
    queued: an edited spec is a new job, not the interrupted one."""
    now = dt.datetime.now(dt.timezone.utc)
    jobs = in_doubt(svc.store.query(site=site, states=[states.UNKNOWN, states.PREPARED]), now)
    if not jobs:
        return None
    backend = svc.backend(site)
    result = backend.transport.run(lookup_command(jobs, backend.kind))
    if not result.ok:
        raise RemoteError(f"cannot look up interrupted submissions: {result.stderr.strip()}")
    decisions = decide(jobs, parse_lookup(result.stdout, backend.kind))
    apply(svc.store, decisions)
    match = None
    for d in decisions:
        same_spec = (
            bool(provenance)
            and d.job.provenance_hash == provenance
            and d.job.spec_path == spec_path
            and d.job.spec_json == spec_json
        )
        if d.outcome == "queued":
            svc.notify(f"{d.job.id}: the interrupted submission did reach {site} as job {d.slurm_job_id}")
            match = d.job if same_spec else match
        elif d.outcome == "not_queued":
            svc.notify(f"{d.job.id}: the interrupted submission never reached {site}")
        elif same_spec:  # submitting this spec again might queue it twice
            raise RemoteError(
                f"cannot tell whether the interrupted submission {d.job.id} of this spec reached {site}: "
                "squeue or sacct did not answer; not submitting again",
                f"try again later (`aifactory status {d.job.id}` asks again)",
                queued="no",
            )
        else:
            svc.notify(f"{d.job.id}: {site} did not answer whether the interrupted submission was queued; asking later")
    return match


def settle_all(svc: Service) -> None:
    """Settle every site that has jobs in doubt (a site whose profile was removed is skipped)."""
    now = dt.datetime.now(dt.timezone.utc)
    for site in sorted({j.site for j in in_doubt(svc.store.query(states=[states.UNKNOWN, states.PREPARED]), now)}):
        try:
            settle(svc, site)
        except NotFound:  # the site's profile was removed: refresh() says so for its jobs
            continue
        except RemoteError as exc:  # one site down must not fail `status` for every site
            svc.notify(f"{site}: cannot look up interrupted submissions now ({exc.message}); asking again later")
