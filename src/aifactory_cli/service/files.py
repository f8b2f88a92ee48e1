"""`fetch`: copy a job's outputs (its `download:` patterns, or the given ones) from the job dir.

A sweep's elements each work in their own directory (`elements/N/` in the job dir): their files come
back under a name that says which element and which values (`3_LR=-1/outputs/...`), files the run
wrote in the job dir itself (not an element's) keep their job-dir paths."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aifactory_cli.errors import BadInput, NotFound, RemoteError
from aifactory_cli.jobs import jobdir
from aifactory_cli.jobs.model import Job
from aifactory_cli.service import elements

if TYPE_CHECKING:
    from aifactory_cli.service.session import Service


@dataclass
class Fetched:
    """What a fetch brought: the job, the files as laid out under `target` (relative paths), and the
    transfer itself for the summary line and --json: bytes received (small files come as a tar
    stream, its 512-byte headers included), the seconds it took, the files whose sha256 matched the
    site's, and the bytes an earlier, cut fetch had brought already (resumed, not sent again)."""

    job: Job
    files: list[str]
    target: Path
    bytes: int = 0
    seconds: float = 0.0
    checked: int = 0
    resumed: int = 0
    via: str | None = None  # the large files' path when not aifactory's own connection (the user's ControlMaster)

    @property
    def rate(self) -> float:
        """MB/s (10^6 bytes, as scp and rsync count)."""
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


def fetch(
    svc: Service,
    ref: str,
    dest: Path | None = None,
    patterns: list[str] | None = None,
    tasks: list[str] | None = None,
) -> Fetched:
    """Download the matching files (see `Fetched`)."""
    job = svc.store.find(ref)
    if not job.workdir:
        raise NotFound(f"job {job.id} has no job dir (state {job.state})")
    wanted = patterns or job.extra.get("download") or []
    if not wanted:
        raise BadInput(
            f"job {job.id} has no download: patterns", 'add download: ["outputs/**"] to the spec or pass --pattern'
        )
    chosen = elements.select(job, tasks) if tasks else None
    backend = svc.backend(job.site)
    try:
        listed = backend.list_files(job)
    except RemoteError:
        from aifactory_cli.service.track import require_job_dir

        require_job_dir(svc, job)  # a job dir that is gone: say so, not the shell's `cd:` message
        raise
    plan = plan_fetch(job, listed, wanted, chosen)
    target = dest or Path.cwd() / f"{job.name}-{job.id}"
    done = Fetched(job, list(plan.values()), target)
    if plan:
        started = time.monotonic()
        with svc.progress(0, "download") or contextlib.nullcontext() as bar:

            def advance(n: int, bar: Callable[[int], None] | None = bar) -> None:
                done.bytes += n
                if bar is not None:
                    bar(n)

            if all(remote == local for remote, local in plan.items()):
                report = backend.fetch(job, list(plan), target, advance)
            else:  # element files: fetched by their job-dir paths, then moved under the element's name
                staging = target / ".aif-fetch"
                _clear(staging)
                moved = False
                try:
                    report = backend.fetch(job, list(plan), staging, advance)
                    for remote, local in plan.items():
                        (target / local).parent.mkdir(parents=True, exist_ok=True)
                        (staging / remote).replace(target / local)
                    moved = True
                finally:  # a failed fetch leaves nothing half-moved behind, but the partial copies of cut
                    # large files stay (in .aif-fetch/.aif-partial/) for the next fetch to resume
                    if moved:
                        shutil.rmtree(staging, ignore_errors=True)
                    else:
                        _clear(staging)
        done.seconds = time.monotonic() - started
        done.checked, done.resumed, done.via = report.checked, report.resumed, report.via
    return done


def _clear(staging: Path) -> None:
    """Empty an element fetch's staging dir, all but the partial copies of cut large files."""
    from aifactory_cli.backends.fetching import PARTIAL

    if not staging.is_dir():
        return
    for child in staging.iterdir():
        if child.name == PARTIAL and child.is_dir() and not child.is_symlink():
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def plan_fetch(job: Job, files: list[str], patterns: list[str], chosen: list[int] | None = None) -> dict[str, str]:
    """Job-dir file -> where it goes under the target. Plain jobs: the same path. Sweeps: an element's
    files (`elements/N/...`) match the patterns relative to the element dir and go under the element's
    label; with `chosen`, only those elements (and no job-dir files)."""
    from aifactory_cli.jobs.staging import match_downloads

    if not job.array_size:
        return {f: f for f in match_downloads(files, patterns)}
    prefix = jobdir.ELEMENTS + "/"
    per_element: dict[int, list[str]] = {}
    shared: list[str] = []
    for f in files:
        if f.startswith(prefix):
            number, _, rest = f[len(prefix) :].partition("/")
            if number.isdigit() and rest:
                per_element.setdefault(int(number), []).append(rest)
        else:
            shared.append(f)
    plan: dict[str, str] = {}
    if chosen is None:
        plan.update({f: f for f in match_downloads(shared, patterns)})
    for index in sorted(per_element):
        if chosen is not None and index not in chosen:
            continue
        name = elements.label(job, index)
        for rest in match_downloads(per_element[index], patterns):
            plan[f"{jobdir.element_dir(index)}/{rest}"] = f"{name}/{rest}"
    return plan
