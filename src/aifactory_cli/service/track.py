"""Following jobs after submission: refresh, status, cancel, wait, logs.

Each site is asked once per refresh about all its live jobs (one squeue + sacct round trip); a job
whose site profile was removed keeps its last known state, and the commands say so. `wait` also
watches the job dirs between two such polls, to learn of an end within a second or two (`_Watch`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from aifactory_cli import states
from aifactory_cli.errors import BadInput, NotFound, RemoteError, WaitTimeout
from aifactory_cli.jobs.model import Job
from aifactory_cli.service import settle

if TYPE_CHECKING:
    from aifactory_cli.backends.base import Backend, Update
    from aifactory_cli.service.session import Service

WAIT_RETRIES = 8  # a restarted login node or a network blip must not end a long wait


def jobs(svc: Service, refs: list[str]) -> list[Job]:
    seen: dict[str, Job] = {}
    for ref in refs:
        job = svc.store.find(ref)
        seen.setdefault(job.id, job)
    return list(seen.values())


def refresh(svc: Service, jobs: list[Job], force: bool = False) -> list[Job]:
    """Ask each site, once, about its live jobs among `jobs`; store and return them."""
    by_site: dict[str, list[Job]] = {}
    orphans: dict[str, list[Job]] = {}
    now = time.time()
    for job in jobs:
        if job.is_final or not job.slurm_job_id:
            continue
        loaded = svc.known_profile(job.site)
        if loaded is None:  # the site's profile was removed: keep what is stored, say so
            orphans.setdefault(job.site, []).append(job)
            continue
        if not force and job.polled_at and now - job.polled_at < loaded.profile.poll_interval:
            continue
        by_site.setdefault(job.site, []).append(job)
    for site, site_jobs in orphans.items():
        svc.notify(
            f"warning: site '{site}' has no profile any more; {', '.join(j.id for j in site_jobs)} "
            f"keep their last known state (restore {site}.yaml in a profile dir to follow them)"
        )
    for site, site_jobs in by_site.items():
        updates = svc.backend(site).poll(site_jobs)
        svc.store.mark_polled(site_jobs, now)
        for job in site_jobs:
            update = updates.get(job.id)
            if update is not None:
                _apply(svc, job, update)
    return jobs


def _apply(svc: Service, job: Job, u: Update) -> None:
    changes: dict[str, Any] = {}
    for key in ("state", "slurm_state", "exit_code", "reason", "started_at", "ended_at", "expected_start"):
        value = getattr(u, key)
        if value != getattr(job, key):
            changes[key] = value
    if u.tasks:
        changes["tasks"] = u.tasks
    if u.slurm_job_id and u.slurm_job_id != job.slurm_job_id:
        changes["slurm_job_id"] = u.slurm_job_id
    if u.segments is not None and u.segments != job.extra.get("segments"):
        changes["extra"] = {**job.extra, "segments": u.segments}
    if changes:
        svc.store.update(job, **changes)


def cached_status(svc: Service, recent_hours: float = 24.0) -> list[Job]:
    """What `status` shows, from the store alone: live jobs and those that ended recently."""
    return _live_and_recent(svc.store.query(live_only=True), svc.store.recent(recent_hours))


def status(svc: Service, refs: list[str], force: bool = True, recent_hours: float = 24.0) -> list[Job]:
    """The given jobs, or every live job plus those that ended in the last `recent_hours`."""
    settle.settle_all(svc)
    if refs:
        return refresh(svc, jobs(svc, refs), force=force)
    live = refresh(svc, svc.store.query(live_only=True), force=force)
    return _live_and_recent(live, svc.store.recent(recent_hours))


def _live_and_recent(live: list[Job], recent: list[Job]) -> list[Job]:
    return sorted({j.id: j for j in [*recent, *live]}.values(), key=lambda j: (j.created_at, j.id))


def _unreachable(svc: Service, site_jobs: list[Job]) -> list[str]:
    """The jobs whose site profile was removed, as `ID (SITE job SLURM_ID, STATE)`."""
    return [
        f"{j.id} ({j.site} job {j.slurm_job_id or '?'}, last known {j.state})"
        for j in site_jobs
        if svc.known_profile(j.site) is None
    ]


def cancel(svc: Service, refs: list[str]) -> list[Job]:
    """scancel the live jobs among `refs` (one call per site), then ask the site once what became
    of them, so the store (and `list`) shows them CANCELLED at once. A name with several live jobs
    is refused by the resolver: cancelling the wrong one loses work."""
    found = jobs(svc, refs)
    by_site: dict[str, list[Job]] = {}
    for job in found:
        if job.is_final:
            svc.notify(f"{job.id} already ended ({job.state}): nothing to cancel")
        elif job.slurm_job_id:
            by_site.setdefault(job.site, []).append(job)
    unreachable: list[str] = []
    for site, site_jobs in by_site.items():
        if svc.known_profile(site) is None:
            unreachable += [f"{j.id} ({site} job {j.slurm_job_id})" for j in site_jobs]
            continue
        svc.backend(site).cancel(site_jobs)
        svc.notify(f"cancel sent for {', '.join(j.id for j in site_jobs)} on {site}")
        _confirm_cancel(svc, site_jobs)
    if unreachable:
        raise NotFound(
            f"cannot cancel {', '.join(unreachable)}: the site's profile is gone",
            "restore the site's profile (SITE.yaml in a profile dir), or scancel the job on the site yourself",
        )
    return found


CANCEL_REQUESTED = "cancel requested, not yet confirmed by the site"
CONFIRM_DELAYS = (0.0, 0.3, 0.7)  # Slurm confirms at once (sacct: ~0.1 s); a local runner within ~0.5 s


def _confirm_cancel(svc: Service, site_jobs: list[Job]) -> None:
    """Store what the site says right after the cancel (scancel succeeds even for a job that has
    just ended, so its answer, not our request, decides the state), asking again briefly while it
    still calls a job live. A job it still calls live keeps its state, with a reason saying the
    cancel is on its way, until the next refresh."""
    for delay in CONFIRM_DELAYS:
        live = [j for j in site_jobs if not j.is_final]
        if not live:
            return
        time.sleep(delay)
        try:
            refresh(svc, live, force=True)
        except RemoteError as exc:
            svc.notify(f"warning: cancel sent, but the site did not say what became of the jobs ({exc.message})")
            break
    for job in site_jobs:
        if not job.is_final:
            svc.store.update(job, reason=CANCEL_REQUESTED, expected_start=None)
        elif job.state != states.CANCELLED:
            svc.notify(f"{job.id} had already ended ({job.state}) when the cancel arrived")


def wait(
    svc: Service,
    jobs: list[Job],
    timeout: float | None = None,
    on_change: Callable[[Job], None] | None = None,
    min_interval: float = 0.5,
    max_interval: float = 30.0,
) -> list[Job]:
    """Until every job has ended: Slurm is asked at most every poll_interval of the site (with the
    backoff below); between two such polls the job dirs are watched (`_watch_until`), so that an
    end is learned within a second or two, and then confirmed by Slurm."""
    # a job whose site profile was removed can never be seen to end: say so now, not after hours
    orphans = _unreachable(svc, [j for j in jobs if not j.is_final])
    if orphans:
        raise NotFound(
            f"cannot wait for {', '.join(orphans)}: the site's profile is gone",
            "restore the site's profile (SITE.yaml in a profile dir) to follow it; "
            "`aifactory status` shows its last known state",
        )
    deadline = time.monotonic() + timeout if timeout is not None else None
    last = {j.id: (j.state, j.reason) for j in jobs}
    watch = _Watch(svc, jobs, last, on_change)
    interval = min_interval
    failures = 0
    while True:
        live = [j for j in jobs if not j.is_final]
        if not live:
            return jobs
        try:
            refresh(svc, live, force=True)
            failures = 0
        except RemoteError as exc:
            failures += 1
            if failures > WAIT_RETRIES:
                raise
            svc.notify(
                f"lost contact with the site ({exc.message}); retry {failures}/{WAIT_RETRIES} in {interval:.0f} s"
            )
        watch.report(live)
        if all(j.is_final for j in jobs):
            return jobs
        # checked after a refresh: --timeout 0 asks the site once instead of reporting stored states
        if deadline is not None and time.monotonic() >= deadline:
            live = [j for j in jobs if not j.is_final]
            raise WaitTimeout(
                f"timeout: {len(live)} job(s) still not finished: " + ", ".join(f"{j.id} {j.state}" for j in live),
                "wait again later with `aifactory wait`, or raise --timeout",
            )
        site_min = max(svc.profile(j.site).profile.poll_interval for j in live)
        sleep = max(interval, min(site_min, max_interval))
        if deadline is not None:
            sleep = min(sleep, max(0.0, deadline - time.monotonic()))
        if failures:
            time.sleep(sleep)  # no contact: the next poll retries, as before; no watching meanwhile
        else:
            watch.until(time.monotonic() + sleep)
        interval = min(interval * 1.5, max_interval)


WATCH_TICK = 1.0  # seconds between two looks at the job dirs while `wait` waits for the next Slurm poll
# An exit-code file is written by the batch script just before it exits, so Slurm learns of the end a
# moment later (~0.1 s on the test bed, sacct included): Slurm is asked once the file has been seen for
# this long, i.e. on the next look, so that its answer is most likely already final.
CONFIRM_GRACE = 1.0


class _Watch:
    """Between two Slurm polls of `wait`: every WATCH_TICK s one small command per site lists the
    exit-code files in the job dirs of all its live jobs (`Backend.ended`). A job whose files all
    appeared is confirmed by ONE Slurm query (for all such jobs of the site), even before the
    site's poll_interval has passed since the last poll: that one query per job and wait is the
    only exception to poll_interval. Its state is Slurm's answer alone; a job Slurm does not show
    ended yet (accounting lag, or a requeue) is reported on a regular poll, never from its file.
    Jobs whose dir cannot be read are left to the regular polls."""

    def __init__(
        self,
        svc: Service,
        jobs: list[Job],
        last: dict[str, tuple[str, str | None]],
        on_change: Callable[[Job], None] | None,
    ) -> None:
        self.svc, self.jobs, self.last, self.on_change = svc, jobs, last, on_change
        self.seen: dict[str, float] = {}  # job id -> when its exit-code files were first all there
        self.confirmed: set[str] = set()  # jobs Slurm was already asked about out of turn

    def report(self, jobs: list[Job]) -> None:
        for job in jobs:
            if (job.state, job.reason) != self.last.get(job.id):
                self.last[job.id] = (job.state, job.reason)
                if self.on_change:
                    self.on_change(job)

    def until(self, when: float) -> None:
        """Sleep until `when` (the next Slurm poll), looking at the job dirs meanwhile; return early
        once every job has ended (as Slurm confirmed) or when the site cannot be reached."""
        while True:
            left = when - time.monotonic()
            if left <= WATCH_TICK:  # the regular poll comes first anyway
                time.sleep(max(0.0, left))
                return
            time.sleep(WATCH_TICK)
            try:
                if self.tick():
                    return
            except RemoteError:
                # lost contact: sleep on to the regular poll, which retries and says so as before
                time.sleep(max(0.0, when - time.monotonic()))
                return

    def tick(self) -> bool:
        """One look at the job dirs (one command per site), then Slurm for those that ended; whether
        every job has ended now."""
        by_site: dict[str, list[Job]] = {}
        for job in self.jobs:
            if not job.is_final and job.slurm_job_id and job.id not in self.confirmed:
                by_site.setdefault(job.site, []).append(job)
        due: list[Job] = []
        for site, site_jobs in by_site.items():
            ended = self.svc.backend(site).ended(site_jobs)
            now = time.monotonic()
            for job in site_jobs:
                if not ended.get(job.id):
                    self.seen.pop(job.id, None)
                elif now - self.seen.setdefault(job.id, now) >= CONFIRM_GRACE:
                    due.append(job)
        if not due:
            return False
        self.confirmed.update(j.id for j in due)
        refresh(self.svc, due, force=True)  # the confirming query: one per site, out of poll_interval's turn
        self.report(due)
        return all(j.is_final for j in self.jobs)


# --- logs ---------------------------------------------------------------------------------------------


def logs(svc: Service, ref: str, stderr: bool = False, task: int | str | None = None) -> tuple[Job, bytes]:
    job = svc.store.find(ref)
    task = _log_task(job, task)
    data = svc.backend(job.site).read_log(job, stderr, task)
    if not data:
        require_job_dir(svc, job)  # "empty" must not hide a job dir that is gone
    return job, data


def require_job_dir(svc: Service, job: Job) -> None:
    """NotFound when the job's dir no longer exists on the site (deleted, or a scratch purge)."""
    if not job.workdir:
        return
    result = svc.backend(job.site).transport.run(["test", "-d", job.workdir])
    if result.rc == 1:
        raise NotFound(
            f"the job dir of {job.id} ({job.name}) no longer exists on {job.site}: {job.workdir}",
            "it was deleted (or purged from scratch); its logs and files are gone",
        )


def follow(
    svc: Service, ref: str, stderr: bool = False, task: int | str | None = None, interval: float = 1.0
) -> Iterator[bytes]:
    job = svc.store.find(ref)
    task = _log_task(job, task)
    backend = svc.backend(job.site)
    offset = 0
    confirmed: set[str] = set()
    while True:
        data = backend.read_log(job, stderr, task, offset)
        if data:
            offset += len(data)
            yield data
        if job.is_final:
            # one last read after the end, for what was written just before it
            data = backend.read_log(job, stderr, task, offset)
            if data:
                yield data
            return
        time.sleep(interval)
        _follow_refresh(svc, job, backend, confirmed)


def follow_both(svc: Service, ref: str, interval: float = 1.0) -> Iterator[tuple[str, bytes]]:
    """The job's stdout and stderr (of element 0 for a sweep) as they grow, as ("stdout" | "stderr",
    bytes) pairs, until the job ends; one last read of each after the end."""
    job = svc.store.find(ref)
    task = _log_task(job, None)
    backend = svc.backend(job.site)
    offsets = {"stdout": 0, "stderr": 0}
    confirmed: set[str] = set()

    def read() -> Iterator[tuple[str, bytes]]:
        for stream in offsets:
            data = backend.read_log(job, stream == "stderr", task, offsets[stream])
            if data:
                offsets[stream] += len(data)
                yield stream, data

    while True:
        yield from read()
        if job.is_final:
            yield from read()
            return
        time.sleep(interval)
        _follow_refresh(svc, job, backend, confirmed)


def _follow_refresh(svc: Service, job: Job, backend: Backend, confirmed: set[str]) -> None:
    """While following logs: Slurm is asked at the site's poll_interval (refresh's rule); once the
    job's exit-code files are there, asked once at once to confirm the end (as `wait` does)."""
    if job.id not in confirmed:
        try:
            if backend.ended([job]).get(job.id):
                confirmed.add(job.id)
                refresh(svc, [job], force=True)
                return
        except RemoteError:
            pass  # the regular refresh below says what it can
    refresh(svc, [job])


def _log_task(job: Job, task: int | str | None) -> int | None:
    """The array element whose logs are wanted (0 by default), by index or by values (`LR=0.1`);
    an element the job lacks is an error."""
    if not job.array_size:
        if task is not None:
            raise BadInput(f"job {job.id} is not an array, so it has no --task {task}", "leave out --task")
        return None
    if task is None:
        return 0
    if isinstance(task, str):
        if not task.isdigit():
            from aifactory_cli.service import elements

            chosen = elements.select(job, [task])
            if len(chosen) != 1:
                raise BadInput(
                    f"--task {task} matches {len(chosen)} elements of job {job.id}: "
                    + ", ".join(elements.describe(job, i) for i in chosen[:6]),
                    "name one element: give more values (KEY=VALUE,KEY2=VALUE2) or its index",
                )
            return chosen[0]
        task = int(task)
    if not 0 <= task < job.array_size:
        raise BadInput(
            f"job {job.id} has array elements 0-{job.array_size - 1}, not {task}",
            f"use --task 0 to --task {job.array_size - 1}",
        )
    return task
