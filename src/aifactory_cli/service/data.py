"""A spec's `data:` at submit (stored once on the site, linked read-only into the job dir), and
`aifactory data ls|gc`: what the site's store holds, which tracked jobs use each entry, and freeing
what none uses.

Which job uses which content is kept here, in the state dir (`data/SITE/JOB.json`: the store's path
and digest -> job-dir path), not in the job rows: a dataset of 100,000 files stays out of `list`."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aifactory_cli import paths, states
from aifactory_cli.jobs.datastore import BUSY_MINUTES

__all__ = ["BUSY_MINUTES", "gc", "report", "stage", "stores"]

if TYPE_CHECKING:
    from aifactory_cli.backends.base import Backend
    from aifactory_cli.backends.datastore import Sent
    from aifactory_cli.jobs.model import Job
    from aifactory_cli.jobs.staging import UploadPlan
    from aifactory_cli.service.session import Service
    from aifactory_cli.service.submit import Prepared


def _usage_dir(site: str) -> Path:
    return paths.state_dir() / "data" / site


def stage(
    svc: Service, backend: Backend, prepared: Prepared, job: Job, plan: UploadPlan
) -> tuple[Sent, int, float] | None:
    """Store the spec's `data:` files on the site (only what the store lacks) and add their links to
    the plan; returns what was sent, the number of files and the seconds taken (None: no `data:`)."""
    import contextlib

    from aifactory_cli.backends.datastore import DataStore
    from aifactory_cli.jobs import datastore as ds
    from aifactory_cli.jobs.staging import collect_uploads

    spec = prepared.resolved.spec
    if not spec.data:
        return None
    started = time.monotonic()
    listed = collect_uploads(spec.data, prepared.loaded_spec.base_dir, what="data")
    clash = sorted({rel for _, rel in listed} & {rel for _, rel in prepared.uploads})
    if clash:
        from aifactory_cli.errors import SpecError

        raise SpecError(f"{clash[0]} is both in upload: and in data:", "list each file in one of them")
    cache = ds.HashCache(paths.state_dir() / "data-hashes.json")
    files = ds.hash_files(listed, cache)
    data_dir = backend.data_dir_for(prepared.resolved.account, prepared.resolved.user)
    store = DataStore(backend.transport, job.site)
    backend.transport.connect()
    digests = sorted({f.sha256 for f in files})
    probe = store.probe(data_dir, digests)
    have = set(probe.have)
    todo = sum(
        f.size - min(probe.partial.get(f.sha256, 0), f.size)
        for f in {f.sha256: f for f in files}.values()
        if f.sha256 not in have
    )
    with svc.progress(todo, "data") or contextlib.nullcontext() as advance:
        sent = store.send(data_dir, files, probe, job.token, advance)
    plan.links.update({f.rel: f"{probe.absolute}/{f.stored}" for f in files})
    _record(job, probe.absolute, files)
    summary = {
        "store": probe.absolute,
        "files": len(files),
        "sent_files": sent.files_sent,
        "sent_bytes": sent.bytes_sent,
        **({"via": sent.via} if sent.via else {}),
    }
    svc.store.update(job, extra={**job.extra, "data": summary})
    return sent, len(files), time.monotonic() - started


def _record(job: Job, absolute: str, files: list[Any]) -> None:
    directory = _usage_dir(job.site)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = {"dir": absolute, "files": {f.sha256: f.rel for f in files}}
    tmp = directory / f".{job.id}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(body))
    os.replace(tmp, directory / f"{job.id}.json")


def report(svc: Service, sent: Sent, count: int, seconds: float) -> None:
    resumed = f", {len(sent.resumed)} resumed" if sent.resumed else ""
    svc.notify(
        f"data: {count} file(s), {sent.files_sent} sent ({sent.bytes_sent / 1e6:.1f} MB{resumed}), "
        f"{sent.stored_already} already in the site's store, in {seconds:.1f} s"
        + (f"; large files via {sent.via}" if sent.via else "")
    )


# --- data ls / gc ---------------------------------------------------------------------------------------


@dataclass
class Entry:
    digest: str
    size: int
    names: set[str] = field(default_factory=set)
    jobs: list[str] = field(default_factory=list)  # tracked jobs using it
    live: bool = False  # one of them has not ended
    site_dirs: list[str] = field(default_factory=list)  # job dirs on the site that link to it
    site_live: bool = False  # one of those is not the dir of a job known here to have ended
    recent: bool = False  # stored or found by a submission in the last BUSY_MINUTES: it may be linked now

    @property
    def in_use(self) -> bool:
        return bool(self.jobs or self.site_dirs)


@dataclass
class StoreView:
    site: str
    path: str
    entries: list[Entry]
    leftovers: dict[str, int]  # parts of cut transfers unchanged for ds.BUSY_MINUTES
    busy: dict[str, int] = field(default_factory=dict)  # parts changed since: maybe an upload now
    unreadable: list[str] = field(default_factory=list)  # job-dir roots not read whole: keep all

    @property
    def total(self) -> int:
        return sum(e.size for e in self.entries)


def _usages(svc: Service, site: str) -> list[tuple[Job, str, dict[str, str]]]:
    """(tracked job, store path, digest -> name) for the site's jobs that have data."""
    out: list[tuple[Job, str, dict[str, str]]] = []
    directory = _usage_dir(site)
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.json")):
        job = svc.store.get(path.stem)
        if job is None:
            continue  # no longer tracked
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        out.append((job, str(body.get("dir", "")), dict(body.get("files", {}))))
    return out


def stores(svc: Service, site: str | None) -> list[StoreView]:
    """The site's stores (the default one for the configured account, and every one a tracked job
    used), each with its entries and who uses them."""
    from aifactory_cli.backends.datastore import DataStore

    site = svc.site_or_default(site)
    backend = svc.backend(site)
    from aifactory_cli.settings import current

    configured = svc.config.sites.get(site)
    account = current().account_for(None, configured.account if configured else None)
    usages = _usages(svc, site)
    dirs = [backend.data_dir_for(account, None), *sorted({d for _, d, _ in usages if d})]
    store = DataStore(backend.transport, site)
    views: dict[str, StoreView] = {}
    for d in dirs:
        listing = store.listing(d)
        if listing.absolute is None or listing.absolute in views:
            continue
        entries = {h: Entry(h, size, recent=h in listing.recent) for h, size in listing.files.items()}
        for job, used_dir, files in usages:
            if used_dir != listing.absolute:
                continue
            for digest, name in files.items():
                entry = entries.get(digest)
                if entry is not None:
                    entry.names.add(name)
                    if job.id not in entry.jobs:
                        entry.jobs.append(job.id)
                    entry.live = entry.live or job.state not in states.FINAL_STATES
        views[listing.absolute] = StoreView(
            site,
            listing.absolute,
            sorted(entries.values(), key=lambda e: e.digest),
            listing.leftovers,
            listing.busy,
        )
    if views:
        _site_users(svc, backend, store, account, list(views.values()))
    return list(views.values())


def _site_users(svc: Service, backend: Backend, store: Any, account: str | None, views: list[StoreView]) -> None:
    """Ask the site which job dirs link into the stores (jobs submitted from anywhere), in one round
    trip over the account's job-dir root and those of the jobs tracked here; a job dir counts as
    ended only when it is the dir of a job tracked here that has ended."""
    root, depth = backend.jobs_root_for(account, None)
    jobs = svc.store.query(site=views[0].site)
    roots = {root}
    for job in jobs:
        if job.workdir:
            roots.add(_up(job.workdir, depth))
    ended = {j.workdir.rstrip("/") for j in jobs if j.workdir and j.state in states.FINAL_STATES}
    links = store.site_links([v.path for v in views], sorted(roots), depth)
    for view in views:
        view.unreadable = links.unreadable
        for entry in view.entries:
            dirs = sorted(links.users.get((view.path, entry.digest), ()))
            entry.site_dirs = dirs
            entry.site_live = any(d not in ended for d in dirs)


def _up(path: str, levels: int) -> str:
    for _ in range(levels):
        path = path.rstrip("/").rpartition("/")[0] or "/"
    return path


def gc(
    svc: Service, site: str | None, dry_run: bool = False, ended: bool = False
) -> list[tuple[StoreView, list[Entry], int]]:
    """Free the entries that no tracked job uses and no job dir on the site links to (with `ended`:
    those whose users all are jobs known here to have ended), none stored or found by a submission in
    the last ds.BUSY_MINUTES (its job may be about to link it), and the parts of cut transfers unchanged
    for ds.BUSY_MINUTES; returns per store what is (or, dry, would be) freed and the bytes."""
    from aifactory_cli.backends.datastore import DataStore

    out = []
    views = stores(svc, site)
    for view in views:
        if view.unreadable:  # a job dir there may link to anything: free only old leftovers
            freed: list[Entry] = []
        else:
            freed = [
                e for e in view.entries if not e.recent and (not e.in_use or (ended and not e.live and not e.site_live))
            ]
        size = sum(e.size for e in freed) + sum(view.leftovers.values())
        if not dry_run:
            backend = svc.backend(view.site)
            DataStore(backend.transport, view.site).remove(view.path, [e.digest for e in freed], sorted(view.leftovers))
        out.append((view, freed, size))
    return out
