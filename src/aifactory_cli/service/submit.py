"""`submit` as one pipeline, down the layers once:

prepare (pure: load, resolve, render)  ->  record PREPARED  ->  stage + sbatch (the backend)
->  record PENDING with the Slurm id    (or, on a failure, what settle.py decides)
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aifactory_cli import states
from aifactory_cli.errors import BadInput, NotFound, RemoteError
from aifactory_cli.jobs.model import Job, now_iso
from aifactory_cli.service import settle

# pydantic, Jinja and the SSH stack are imported where they are used (fast `list` and `status`)
if TYPE_CHECKING:
    from aifactory_cli.backends.base import Backend
    from aifactory_cli.jobs.staging import UploadManifest, UploadPlan
    from aifactory_cli.service.session import Service
    from aifactory_cli.sites.profile import LoadedProfile
    from aifactory_cli.sites.render import Rendered
    from aifactory_cli.sites.resolve import Overrides, ResolvedJob
    from aifactory_cli.spec.model import LoadedSpec


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


# --- 1. prepare: nothing leaves the machine ------------------------------------------------------------


def prepare(
    svc: Service,
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
    site = svc.site_or_default(site)
    profile = svc.profile(site)
    spec = loaded_spec.for_site(site)
    if profile.profile.scheduler == "local" and spec.resources.gpus_per_node != 0:
        from aifactory_cli.backends.local import with_machine_gpus

        profile = with_machine_gpus(profile)  # the local site's GPUs are this machine's
    resolved = resolve(spec, profile, svc.config, overrides, current())
    resolved.warnings += _unknown_override_sites(loaded_spec)
    uploads = collect_uploads(spec.upload, loaded_spec.base_dir)
    token = uuid.uuid4().hex
    job_id = token[:8]
    deps = [*spec.depends_on, *(after or [])]
    if deps:
        resolved.dependencies = _dependency_ids(svc, deps, site)
    rendered = render(resolved, token, job_id)
    return Prepared(loaded_spec, profile, resolved, rendered, token, job_id, uploads)


def _dependency_ids(svc: Service, refs: list[str], site: str) -> list[str]:
    ids = []
    for ref in refs:
        try:
            job = svc.store.find(ref)
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
                f"dependency {ref} ({job.id}) ended {job.state}: a job that waits for it to succeed would never start",
                "resubmit the dependency first, or drop it from depends_on/--after",
            )
        ids.append(job.slurm_job_id)
    return ids


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


def new_job(prepared: Prepared) -> Job:
    """The store's record of a prepared job (PREPARED, with its provenance)."""
    resolved, spec = prepared.resolved, prepared.resolved.spec
    now = now_iso()
    return Job(
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
            "qos": resolved.qos,
            **({"packed": True} if resolved.pack else {}),
            **({"segmented": resolved.segments.mode, "segments": []} if resolved.segments else {}),
        },
    )


# --- 2. submit: record, stage and sbatch, record -------------------------------------------------------


def submit(svc: Service, prepared: Prepared) -> Job:
    resolved = prepared.resolved
    job = new_job(prepared)
    # an earlier submission of this very spec that was interrupted: find out what became of it
    # before anything is sent again, so a job is never submitted twice
    earlier = settle.settle(
        svc, resolved.site, provenance=job.provenance_hash, spec_path=job.spec_path, spec_json=job.spec_json
    )
    if earlier is not None:
        svc.notify(
            f"not submitting again: the interrupted submission {earlier.id} of this spec reached "
            f"{earlier.site} as job {earlier.slurm_job_id}"
        )
        return earlier
    # a bad ssh setting or AIFACTORY_PERSIST fails here, before anything is recorded
    backend = svc.backend(resolved.site)
    # recorded before any remote step: an ambiguous failure can always be looked up
    svc.store.add(job)
    manifest = None
    try:
        svc.join_prewarm(resolved.site)
        workdir = backend.workdir_for(job, resolved.account, resolved.user)
        svc.store.update(job, workdir=workdir)
        plan, manifest = _plan(svc, prepared, job, workdir, backend)
        if prepared.resolved.spec.data:  # stored once on the site, linked read-only
            from aifactory_cli.service import data

            staged = data.stage(svc, backend, prepared, job, plan)
            if staged is not None:
                data.report(svc, *staged)
        progress = svc.progress(plan.total_bytes, "upload")
        started = time.monotonic()
        with progress or contextlib.nullcontext() as advance:
            slurm_id, absolute = backend.submit(job, plan, workdir, advance)
        if prepared.uploads:
            _report_upload(svc, plan, time.monotonic() - started)
    except BadInput:
        svc.store.delete(job)  # the scheduler refused it for certain: nothing is queued, nothing kept
        _remove_refused_dir(backend, job)
        raise
    except RemoteError as exc:
        settle.submission_failed(svc.store, job, exc)
        raise
    except BaseException:
        settle.mark_in_doubt(svc.store, job, "submission interrupted")
        raise
    if manifest is not None and plan.cache_dir is not None:
        manifest.save(prepared.uploads, plan.cache_dir)
    svc.store.update(
        job,
        state=states.PENDING,
        slurm_state="PENDING",
        slurm_job_id=slurm_id,
        workdir=absolute,
        submitted_at=now_iso(),
    )
    return job


def _remove_refused_dir(backend: Backend, job: Job) -> None:
    """The job dir of a submission Slurm refused holds only what was staged for it: removed, so that
    `sync` never brings a job back that was never queued. Only a dir named for this job's id."""
    import posixpath

    workdir = (job.workdir or "").rstrip("/")
    if not workdir or job.id not in posixpath.basename(workdir):
        return
    with contextlib.suppress(Exception):  # best effort: the refusal is what the user must see
        backend.transport.run(["rm", "-rf", "--", workdir])


def _report_upload(svc: Service, plan: UploadPlan, seconds: float) -> None:
    size = plan.upload_bytes
    rate = size / seconds / 1e6 if seconds > 0 else 0.0
    skipped = f", {len(plan.unchanged)} unchanged file(s) not sent" if plan.unchanged else ""
    svc.notify(f"uploaded {len(plan.files)} file(s), {size / 1e6:.1f} MB in {seconds:.1f} s ({rate:.1f} MB/s){skipped}")


def _plan(
    svc: Service, prepared: Prepared, job: Job, workdir: str, backend: Backend
) -> tuple[UploadPlan, UploadManifest | None]:
    """What goes into the job dir: the changed uploads, the script and the metadata."""
    from aifactory_cli import paths
    from aifactory_cli.jobs.jobdir import META, SCRIPT
    from aifactory_cli.jobs.staging import UploadManifest, UploadPlan

    r = prepared.resolved
    meta: dict[str, Any] = {
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
        "packed": bool(r.pack),
        "segmented": r.segments.mode if r.segments else None,  # a checkpointed run (sync: one job, its segments)
    }
    if r.dependencies and job.site == "local":
        meta["depends_on_dirs"] = _local_dep_dirs(svc, r.dependencies)
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


def _local_dep_dirs(svc: Service, slurm_ids: list[str]) -> list[str]:
    dirs = []
    for sid in slurm_ids:
        job = svc.store.find(f"local:{sid}")
        if job.workdir:
            dirs.append(job.workdir)
    return dirs
