"""The use cases: submit, render, status, list, logs, wait, cancel, fetch, sync.

One `Service` per CLI command: it opens the store and at most one backend (one connection) per
site, and closes them at the end.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aifactory_cli import states
from aifactory_cli.errors import AifactoryError, BadInput, NotFound, RemoteError, WaitTimeout
from aifactory_cli.jobs.store import Job, Store, now_iso

# Only the store is needed by `list` and `status --cached`: everything else (pydantic models,
# Jinja, the SSH stack) is imported where it is used, so those commands start fast.
if TYPE_CHECKING:
    from aifactory_cli.backends.base import Backend, Update
    from aifactory_cli.jobs.staging import UploadPlan
    from aifactory_cli.sites.profile import LoadedProfile, UserConfig
    from aifactory_cli.sites.render import Rendered
    from aifactory_cli.sites.resolve import Overrides, ResolvedJob
    from aifactory_cli.spec.model import LoadedSpec

Notify = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class Prepared:
    """Everything about a job before it leaves the machine."""

    loaded_spec: LoadedSpec
    profile: LoadedProfile
    resolved: ResolvedJob
    rendered: Rendered
    token: str
    job_id: str
    uploads: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def script(self) -> str:
        return self.rendered.script


class Service:
    def __init__(
        self, notify: Notify | None = None, progress_factory: Any = None, interactive: bool | None = None
    ) -> None:
        self.notify = notify or _quiet
        self.progress_factory = progress_factory
        self.interactive = interactive
        self._store: Store | None = None
        self._config: UserConfig | None = None
        self._backends: dict[str, Backend] = {}
        self._profiles: dict[str, LoadedProfile] = {}
        self._prewarm: dict[str, tuple[Any, list[BaseException]]] = {}

    # --- resources --------------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store()
        return self._store

    @property
    def config(self) -> UserConfig:
        if self._config is None:
            from aifactory_cli.sites.profile import load_user_config

            self._config, _ = load_user_config()
        return self._config

    def profile(self, site: str) -> LoadedProfile:
        if site not in self._profiles:
            from aifactory_cli.sites.profile import load_profile

            self._profiles[site] = load_profile(site)
        return self._profiles[site]

    def site_or_default(self, site: str | None) -> str:
        from aifactory_cli.sites.profile import default_site

        return site or default_site(self.config)

    def backend(self, site: str) -> Backend:
        if site in self._backends:
            return self._backends[site]
        from aifactory_cli.backends.base import LocalBackend, SlurmBackend

        loaded = self.profile(site)
        if loaded.profile.scheduler == "local":
            from aifactory_cli.transport.local import LocalTransport

            backend: Backend = LocalBackend(loaded, LocalTransport(), lambda: self.store.next_counter("local_job_id"))
        else:
            from aifactory_cli.transport.agent.client import make_transport

            settings = self._ssh_settings(site, loaded)
            if not settings.host:
                raise BadInput(
                    f"site '{site}' has no ssh.host in its profile", f"set sites.{site}.ssh_host in the config file"
                )
            backend = SlurmBackend(
                loaded, make_transport(settings, site=site, interactive=self.interactive, persist=self._persist(site))
            )
        self._backends[site] = backend
        return backend

    def _persist(self, site: str) -> float:
        """How long a connection agent keeps the site's connection: env, then config, then profile."""
        from aifactory_cli.settings import current

        return current().persist_for(self.config.for_site(site).persist, self.profile(site).profile.ssh.persist)

    def _ssh_settings(self, site: str, loaded: LoadedProfile) -> Any:
        """The profile's SSH settings, then the user config, then the environment (CI runners get
        the key path and known_hosts content as secrets)."""
        import os

        from aifactory_cli.settings import current

        env = current()
        settings = loaded.profile.ssh.model_copy()
        mine = self.config.for_site(site)
        settings.user = env.ssh_user_for(mine.user, settings.user)
        settings.host = mine.ssh_host or settings.host
        settings.identity_file = env.ssh_key_for(mine.identity_file, settings.identity_file)
        content = env.ssh_known_hosts
        if content:
            from aifactory_cli import paths

            path = paths.ensure_private_dir(paths.state_dir()) / "known_hosts.env"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(content.rstrip("\n") + "\n")
            settings.known_hosts = str(path)
        return settings

    def prewarm(self, site: str | None) -> None:
        """Start connecting to a remote site in the background, so the network round trips of
        the login overlap with loading, resolving and rendering the spec."""
        import threading

        try:
            name = self.site_or_default(site)
            if self.profile(name).profile.scheduler == "local" or name in self._prewarm:
                return
            transport = self.backend(name).transport
        except AifactoryError:
            return  # reported properly when the command gets there
        errors: list[BaseException] = []

        def connect() -> None:
            try:
                transport.connect()  # type: ignore[attr-defined]
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=connect, name=f"connect-{name}", daemon=True)
        thread.start()
        self._prewarm[name] = (thread, errors)

    def _join_prewarm(self, site: str) -> None:
        entry = self._prewarm.pop(site, None)
        if entry is None:
            return
        thread, errors = entry
        thread.join()
        if errors:
            exc = errors[0]
            if isinstance(exc, RemoteError):
                exc.nothing_sent = True  # type: ignore[attr-defined]
            raise exc

    def close(self) -> None:
        for backend in self._backends.values():
            with contextlib.suppress(Exception):
                backend.close()
        self._backends.clear()
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- prepare / render -------------------------------------------------------------------------

    def prepare(
        self,
        spec_path: str | Path,
        site: str | None,
        overrides: Overrides | None = None,
        after: list[str] | None = None,
        loaded_spec: LoadedSpec | None = None,
    ) -> Prepared:
        from aifactory_cli.jobs.staging import collect_uploads
        from aifactory_cli.settings import current
        from aifactory_cli.sites.render import render
        from aifactory_cli.sites.resolve import resolve
        from aifactory_cli.spec.model import load_spec

        loaded_spec = loaded_spec or load_spec(spec_path)
        site = self.site_or_default(site)
        profile = self.profile(site)
        spec = loaded_spec.for_site(site)
        resolved = resolve(spec, profile, self.config, overrides, current())
        resolved.warnings += _unknown_override_sites(loaded_spec)
        uploads = collect_uploads(spec.upload, loaded_spec.base_dir)
        token = uuid.uuid4().hex
        job_id = token[:8]
        deps = [*spec.depends_on, *(after or [])]
        if deps:
            resolved.dependencies = self._dependency_ids(deps, site)
        rendered = render(resolved, token, job_id)
        return Prepared(loaded_spec, profile, resolved, rendered, token, job_id, uploads)

    def _dependency_ids(self, refs: list[str], site: str) -> list[str]:
        ids = []
        for ref in refs:
            try:
                job = self.store.find(ref)
            except NotFound:
                if ref.isdigit():  # a Slurm job id that aifactory does not track
                    ids.append(ref)
                    continue
                raise
            if job.site != site:
                raise BadInput(
                    f"dependency {ref} runs on {job.site}, not on {site}",
                    "a job can only depend on jobs of the same site",
                )
            if not job.slurm_job_id:
                raise BadInput(f"dependency {ref} has no scheduler job id yet (state {job.state})")
            if job.is_final and job.state != states.COMPLETED:
                raise BadInput(
                    f"dependency {ref} ({job.id}) ended {job.state}: "
                    "a job that waits for it to succeed would never start",
                    "resubmit the dependency first, or drop it from depends_on/--after",
                )
            ids.append(job.slurm_job_id)
        return ids

    # --- submit -----------------------------------------------------------------------------------

    def submit(self, prepared: Prepared) -> Job:
        resolved, spec = prepared.resolved, prepared.resolved.spec
        now = now_iso()
        job = Job(
            id=prepared.job_id,
            token=prepared.token,
            name=resolved.name,
            site=resolved.site,
            state=states.PREPARED,
            created_at=now,
            updated_at=now,
            array_size=resolved.array_size,
            spec_path=str(prepared.loaded_spec.path.resolve()) if prepared.loaded_spec.path else None,
            spec_json=spec.model_dump_json(exclude={"sites"}),
            script=prepared.script,
            profile_name=prepared.profile.name,
            profile_version=prepared.profile.profile.version,
            profile_digest=prepared.profile.digest,
            template_digest=prepared.rendered.template_digest,
            provenance_hash=prepared.rendered.provenance_hash(prepared.profile.digest),
            extra={
                "download": spec.download,
                "depends_on": resolved.dependencies,
                "partition": resolved.partition_name,
                "account": resolved.account,
            },
        )
        # an earlier submission of this very spec that was interrupted: find out what became of it
        # before anything is sent again, so a job is never submitted twice
        earlier = self.settle_in_doubt(resolved.site, provenance=job.provenance_hash, spec_path=job.spec_path)
        if earlier is not None:
            self.notify(
                f"not submitting again: the interrupted submission {earlier.id} of this spec reached "
                f"{earlier.site} as job {earlier.slurm_job_id}"
            )
            return earlier
        # a bad ssh setting or AIFACTORY_PERSIST fails here, before anything is recorded
        backend = self.backend(resolved.site)
        # recorded before any remote step: an ambiguous failure can always be looked up
        self.store.add(job)
        manifest = None
        try:
            self._join_prewarm(resolved.site)
            workdir = backend.workdir_for(job, resolved.account, resolved.user)
            self.store.update(job, workdir=workdir)
            plan, manifest = self._plan(prepared, job, workdir, backend)
            progress = self._progress(plan.total_bytes, "upload") if self.progress_factory else None
            started = time.monotonic()
            with progress or contextlib.nullcontext() as advance:
                slurm_id, absolute = backend.submit(job, plan, workdir, advance)
            if prepared.uploads:
                self._report_upload(plan, time.monotonic() - started)
        except BadInput:
            # the scheduler refused it for certain: nothing is queued, so nothing is kept
            self.store.delete(job)
            raise
        except RemoteError as exc:
            if getattr(exc, "nothing_sent", False) or getattr(exc, "not_queued", False):
                self.store.delete(job)  # certain: nothing was sent, or Slurm queued nothing
            else:
                self.store.update(
                    job,
                    state=states.UNKNOWN,
                    reason=f"submission outcome unknown: {exc.message}",
                    extra={**job.extra, "in_doubt": True},
                )
                exc.hint = (exc.hint + "; " if exc.hint else "") + (
                    f"`aifactory status {job.id}` finds out whether it reached Slurm (it is never submitted twice)"
                )
            raise
        except BaseException:
            self.store.update(
                job, state=states.UNKNOWN, reason="submission interrupted", extra={**job.extra, "in_doubt": True}
            )
            raise
        if manifest is not None and plan.cache_dir is not None:
            manifest.save(prepared.uploads, plan.cache_dir)
        self.store.update(
            job,
            state=states.PENDING,
            slurm_state="PENDING",
            slurm_job_id=slurm_id,
            workdir=absolute,
            submitted_at=now_iso(),
        )
        return job

    def _report_upload(self, plan: UploadPlan, seconds: float) -> None:
        size = plan.upload_bytes
        rate = size / seconds / 1e6 if seconds > 0 else 0.0
        skipped = f", {len(plan.unchanged)} unchanged file(s) not sent" if plan.unchanged else ""
        self.notify(
            f"uploaded {len(plan.files)} file(s), {size / 1e6:.1f} MB in {seconds:.1f} s ({rate:.1f} MB/s){skipped}"
        )

    def _plan(self, prepared: Prepared, job: Job, workdir: str, backend: Backend) -> tuple[UploadPlan, Any]:
        from aifactory_cli import paths
        from aifactory_cli.backends.base import META, SCRIPT
        from aifactory_cli.jobs.staging import UploadManifest, UploadPlan

        r = prepared.resolved
        meta = {
            "aifactory": 1,
            "token": job.token,
            "id": job.id,
            "name": job.name,
            "site": job.site,
            "created_at": job.created_at,
            "spec": json.loads(job.spec_json or "{}"),
            "profile": job.profile_name,
            "profile_version": job.profile_version,
            "provenance_hash": job.provenance_hash,
            "array_size": job.array_size,
            "time_seconds": r.time_seconds,
            "tasks": r.total_tasks,
            "cpus_per_task": r.cpus_per_task,
            "max_parallel": r.max_parallel,
            "download": r.spec.download,
        }
        if r.dependencies and job.site == "local":
            meta["depends_on_dirs"] = self._local_dep_dirs(r.dependencies)
        manifest = None
        if prepared.uploads:
            key = UploadManifest.key(job.site, prepared.loaded_spec.base_dir, r.spec.upload)
            manifest = UploadManifest(paths.state_dir() / "uploads" / f"{job.site}-{key}.json")
            plan = manifest.plan(prepared.uploads, backend.cache_dir_for(workdir, key))
        else:
            plan = UploadPlan()
        plan.add_generated(SCRIPT, prepared.script.encode(), 0o700)
        plan.add_generated(META, json.dumps(meta, indent=1).encode())
        return plan, manifest

    def _local_dep_dirs(self, slurm_ids: list[str]) -> list[str]:
        dirs = []
        for sid in slurm_ids:
            job = self.store.find(f"local:{sid}")
            if job.workdir:
                dirs.append(job.workdir)
        return dirs

    def _progress(self, total: int, what: str) -> Any:
        return self.progress_factory(total, what) if self.progress_factory else None

    # --- interrupted submissions -----------------------------------------------------------------

    STALE_PREPARED_SECONDS = 3600.0
    WAIT_RETRIES = 8

    def in_doubt(self, site: str | None = None) -> list[Job]:
        """Jobs whose submission was interrupted (flagged by the process that saw it), or that stayed
        PREPARED for an hour (that process died)."""
        import datetime as dt

        out = []
        now = dt.datetime.now(dt.timezone.utc)
        for job in self.store.query(site=site, states=[states.UNKNOWN, states.PREPARED]):
            if job.slurm_job_id:
                continue
            if job.extra.get("in_doubt"):
                out.append(job)
            elif job.state == states.PREPARED:
                age = (now - dt.datetime.fromisoformat(job.created_at)).total_seconds()
                if age > self.STALE_PREPARED_SECONDS:
                    out.append(job)
        return out

    def settle_in_doubt(self, site: str, provenance: str | None = None, spec_path: str | None = None) -> Job | None:
        """Look up interrupted submissions of `site` on the site (one remote command). Returns the
        one for this spec (same provenance hash and path) if it did reach the scheduler."""
        jobs = self.in_doubt(site)
        if not jobs:
            return None
        found = self.backend(site).find_submitted(jobs)
        match = None
        for job in jobs:
            sid = found.get(job.id)
            extra = {k: v for k, v in job.extra.items() if k != "in_doubt"}
            if sid:
                self.store.update(
                    job,
                    slurm_job_id=sid,
                    state=states.PENDING,
                    slurm_state=None,
                    reason="recovered after an interrupted submission",
                    extra=extra,
                    submitted_at=job.submitted_at or job.created_at,
                )
                self.notify(f"{job.id}: the interrupted submission did reach {site} as job {sid}")
                if job.provenance_hash == provenance and job.spec_path == spec_path and provenance:
                    match = job
            else:
                self.store.update(
                    job,
                    state=states.FAILED,
                    reason="never submitted: the submission was interrupted before sbatch ran; submit it again",
                    extra=extra,
                )
                self.notify(f"{job.id}: the interrupted submission never reached {site}")
        return match

    # --- refresh / status -------------------------------------------------------------------------

    def refresh(self, jobs: list[Job], force: bool = False) -> list[Job]:
        """Ask each site, once, about its live jobs among `jobs`; store and return them."""
        by_site: dict[str, list[Job]] = {}
        orphans: dict[str, list[Job]] = {}
        now = time.time()
        for job in jobs:
            if job.is_final or not job.slurm_job_id:
                continue
            try:
                interval = self.profile(job.site).profile.poll_interval
            except NotFound:  # the site's profile was removed: keep what is stored, say so
                orphans.setdefault(job.site, []).append(job)
                continue
            if not force and job.polled_at and now - job.polled_at < interval:
                continue
            by_site.setdefault(job.site, []).append(job)
        for site, site_jobs in orphans.items():
            self.notify(
                f"warning: site '{site}' has no profile any more; {', '.join(j.id for j in site_jobs)} "
                f"keep their last known state (restore {site}.yaml in a profile dir to follow them)"
            )
        for site, site_jobs in by_site.items():
            updates = self.backend(site).poll(site_jobs)
            self.store.mark_polled(site_jobs, now)
            for job in site_jobs:
                update = updates.get(job.id)
                if update is not None:
                    self._apply(job, update)
        return jobs

    def _apply(self, job: Job, u: Update) -> None:
        changes: dict[str, Any] = {}
        for key in ("state", "slurm_state", "exit_code", "reason", "started_at", "ended_at"):
            value = getattr(u, key)
            if value != getattr(job, key):
                changes[key] = value
        if u.tasks:
            changes["tasks"] = u.tasks
        if changes:
            self.store.update(job, **changes)

    def jobs(self, refs: list[str]) -> list[Job]:
        seen: dict[str, Job] = {}
        for ref in refs:
            job = self.store.find(ref)
            seen.setdefault(job.id, job)
        return list(seen.values())

    def cached_status(self, recent_hours: float = 24.0) -> list[Job]:
        """What `status` shows, from the store alone: live jobs and those that ended recently."""
        return _live_and_recent(self.store.query(live_only=True), self.store.recent(recent_hours))

    def status(self, refs: list[str], force: bool = True, recent_hours: float = 24.0) -> list[Job]:
        """The given jobs, or every live job plus those that ended in the last `recent_hours`."""
        for site in sorted({j.site for j in self.in_doubt()}):
            try:
                self.settle_in_doubt(site)
            except NotFound:  # the site's profile was removed: refresh() says so for its jobs
                continue
        if refs:
            return self.refresh(self.jobs(refs), force=force)
        jobs = self.refresh(self.store.query(live_only=True), force=force)
        return _live_and_recent(jobs, self.store.recent(recent_hours))

    # --- cancel / wait ----------------------------------------------------------------------------

    def cancel(self, refs: list[str]) -> list[Job]:
        jobs = self.jobs(refs)
        by_site: dict[str, list[Job]] = {}
        for job in jobs:
            if not job.is_final and job.slurm_job_id:
                by_site.setdefault(job.site, []).append(job)
        unreachable: list[str] = []
        for site, site_jobs in by_site.items():
            try:
                backend = self.backend(site)
            except NotFound:
                unreachable += [f"{j.id} ({site} job {j.slurm_job_id})" for j in site_jobs]
                continue
            backend.cancel(site_jobs)
            self.notify(f"cancel sent for {', '.join(j.id for j in site_jobs)} on {site}")
        if unreachable:
            raise NotFound(
                f"cannot cancel {', '.join(unreachable)}: the site's profile is gone",
                "restore the site's profile (SITE.yaml in a profile dir), or scancel the job on the site yourself",
            )
        return jobs

    def wait(
        self,
        refs: list[str] | None = None,
        jobs: list[Job] | None = None,
        timeout: float | None = None,
        on_change: Callable[[Job], None] | None = None,
        min_interval: float = 0.5,
        max_interval: float = 30.0,
    ) -> list[Job]:
        jobs = jobs if jobs is not None else self.jobs(refs or [])
        deadline = time.monotonic() + timeout if timeout is not None else None
        last = {j.id: (j.state, j.reason) for j in jobs}
        interval = min_interval
        failures = 0
        while True:
            live = [j for j in jobs if not j.is_final]
            if not live:
                return jobs
            try:
                self.refresh(live, force=True)
                failures = 0
            except RemoteError as exc:
                # a restarted login node or a network blip must not end a long wait: retry with back-off
                failures += 1
                if failures > self.WAIT_RETRIES:
                    raise
                self.notify(
                    f"lost contact with the site ({exc.message}); retry {failures}/{self.WAIT_RETRIES} "
                    f"in {interval:.0f} s"
                )
            for job in live:
                if (job.state, job.reason) != last.get(job.id):
                    last[job.id] = (job.state, job.reason)
                    if on_change:
                        on_change(job)
            if all(j.is_final for j in jobs):
                return jobs
            # checked after a refresh: --timeout 0 asks the site once instead of reporting stored states
            if deadline is not None and time.monotonic() >= deadline:
                live = [j for j in jobs if not j.is_final]
                raise WaitTimeout(
                    f"timeout: {len(live)} job(s) still not finished: " + ", ".join(f"{j.id} {j.state}" for j in live),
                    "wait again later with `aifactory wait`, or raise --timeout",
                )
            site_min = max(self.profile(j.site).profile.poll_interval for j in live)
            sleep = max(interval, min(site_min, max_interval))
            if deadline is not None:
                sleep = min(sleep, max(0.0, deadline - time.monotonic()))
            time.sleep(sleep)
            interval = min(interval * 1.5, max_interval)

    # --- logs / fetch -----------------------------------------------------------------------------

    def logs(self, ref: str, stderr: bool = False, task: int | None = None) -> tuple[Job, bytes]:
        job = self.store.find(ref)
        task = _log_task(job, task)
        return job, self.backend(job.site).read_log(job, stderr, task)

    def follow(self, ref: str, stderr: bool = False, task: int | None = None, interval: float = 1.0) -> Iterator[bytes]:
        job = self.store.find(ref)
        task = _log_task(job, task)
        backend = self.backend(job.site)
        offset = 0
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
            self.refresh([job], force=True)

    def fetch(
        self, ref: str, dest: Path | None = None, patterns: list[str] | None = None
    ) -> tuple[Job, list[str], Path]:
        job = self.store.find(ref)
        if not job.workdir:
            raise NotFound(f"job {job.id} has no job dir (state {job.state})")
        wanted = patterns or job.extra.get("download") or []
        if not wanted:
            raise BadInput(
                f"job {job.id} has no download: patterns", 'add download: ["outputs/**"] to the spec or pass --pattern'
            )
        from aifactory_cli.jobs.staging import match_downloads

        backend = self.backend(job.site)
        files = match_downloads(backend.list_files(job), wanted)
        target = dest or Path.cwd() / f"{job.name}-{job.id}"
        if files:
            progress = self._progress(0, "download") if self.progress_factory else None
            with progress or contextlib.nullcontext() as advance:
                backend.fetch(job, files, target, advance)
        return job, files, target


def _live_and_recent(live: list[Job], recent: list[Job]) -> list[Job]:
    return sorted({j.id: j for j in [*recent, *live]}.values(), key=lambda j: (j.created_at, j.id))


def _log_task(job: Job, task: int | None) -> int | None:
    """The array element whose logs are wanted (0 by default); an element the job lacks is an error."""
    if not job.array_size:
        if task is not None:
            raise BadInput(f"job {job.id} is not an array, so it has no --task {task}", "leave out --task")
        return None
    if task is None:
        return 0
    if not 0 <= task < job.array_size:
        raise BadInput(
            f"job {job.id} has array elements 0-{job.array_size - 1}, not {task}",
            f"use --task 0 to --task {job.array_size - 1}",
        )
    return task


def _unknown_override_sites(loaded_spec: LoadedSpec) -> list[str]:
    """A `sites:` entry for a site with no profile is probably a typo: its overrides are never used."""
    named = loaded_spec.raw.get("sites") or {}
    if not named:
        return []  # most specs: no profile dirs are listed on the submit path
    from aifactory_cli.errors import did_you_mean
    from aifactory_cli.paths import available_sites

    known = available_sites()
    out = []
    for name in named:
        if str(name) not in known:
            guess = did_you_mean(str(name), known)
            out.append(
                f"sites.{name}: no site '{name}' is known, so these overrides are never used"
                + (f" (did you mean '{guess}'?)" if guess else f" (sites: {', '.join(known)})")
            )
    return out


def exit_code_for(jobs: list[Job]) -> int:
    """0 if every job COMPLETED, else 1 (the contract's exit codes for --wait and wait)."""
    return 0 if jobs and all(j.state == states.COMPLETED for j in jobs) else 1


__all__ = ["AifactoryError", "Prepared", "Service", "exit_code_for"]
