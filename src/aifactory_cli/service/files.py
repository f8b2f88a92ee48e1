"""`fetch`: copy a job's outputs (its `download:` patterns, or the given ones) from the job dir."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from aifactory_cli.errors import BadInput, NotFound
from aifactory_cli.jobs.model import Job

if TYPE_CHECKING:
    from aifactory_cli.service.session import Service


def fetch(
    svc: Service, ref: str, dest: Path | None = None, patterns: list[str] | None = None
) -> tuple[Job, list[str], Path]:
    job = svc.store.find(ref)
    if not job.workdir:
        raise NotFound(f"job {job.id} has no job dir (state {job.state})")
    wanted = patterns or job.extra.get("download") or []
    if not wanted:
        raise BadInput(
            f"job {job.id} has no download: patterns", 'add download: ["outputs/**"] to the spec or pass --pattern'
        )
    from aifactory_cli.jobs.staging import match_downloads

    backend = svc.backend(job.site)
    files = match_downloads(backend.list_files(job), wanted)
    target = dest or Path.cwd() / f"{job.name}-{job.id}"
    if files:
        with svc.progress(0, "download") or contextlib.nullcontext() as advance:
            backend.fetch(job, files, target, advance)
    return job, files, target
