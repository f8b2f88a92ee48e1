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

__all__ = ["BUSY_MINUTES", "Entry", "TreeEntry", "gc", "report", "stage", "stores"]

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

    from aifactory_cli.backends.datastore import DataMismatch, DataStore
    from aifactory_cli.jobs import datastore as ds
    from aifactory_cli.jobs.datatree import group, needed, probe_lines
    from aifactory_cli.jobs.jobdir import DATA_STORE
    from aifactory_cli.jobs.staging import collect_files

    spec = prepared.resolved.spec
    if not spec.data:
        return None
    started = time.monotonic()
    listed = collect_files(spec.data, prepared.loaded_spec.base_dir, what="data")
    clash = sorted({item[1] for item in listed} & {rel for _, rel in prepared.uploads})
    if clash:
        from aifactory_cli.errors import SpecError

        raise SpecError(f"{clash[0]} is both in upload: and in data:", "list each file in one of them")
    cache = ds.HashCache(paths.state_dir() / "data-hashes.json")
    files = ds.hash_files(listed, cache)
    # a data: directory that nothing else in the job dir shares becomes one tree and one link
    taken = {rel.split("/", 1)[0] for rel in [*plan.generated, *(r for _, r in prepared.uploads)]}
    trees, single = group([(f.rel, f.sha256) for f in files], taken)
    data_dir = backend.data_dir_for(prepared.resolved.account, prepared.resolved.user)
    store = DataStore(backend.transport, job.site)
    backend.transport.connect()
    by_rel = {f.rel: f for f in files}
    small = (f.sha256 for f in files if f.size < ds.LARGE)
    probe = store.probe(data_dir, probe_lines(trees, (by_rel[rel].sha256 for rel in single), small))
    need = needed(trees, (by_rel[rel].sha256 for rel in single), probe.trees)
    todo = sum(
        f.size - min(probe.partial.get(f.sha256, 0), f.size)
        for f in {f.sha256: f for f in files}.values()
        if f.sha256 in need and f.sha256 not in probe.have
    )
    with svc.progress(todo, "data") or contextlib.nullcontext() as advance:
        try:
            sent = store.send(data_dir, files, probe, job.token, advance, trees, need, defer_commit=True)
        except DataMismatch as exc:
            # the files named are read again at the next submit: one rewritten within the clock's
            # tick of its hash keeps its stamp, and with its old digest cached it was refused forever
            cache.forget([f.path for f in files if f.sha256 in exc.digests])
            raise
    if sent.commit:  # the stream arrived whole: moved into the store by the submission's round trip
        plan.add_prelude(sent.commit, f"the data sent were not moved into the store {data_dir}")
    plan.links.update({rel: f"{probe.absolute}/{by_rel[rel].stored}" for rel in single})
    plan.links.update({t.top: f"{probe.absolute}/{t.stored}" for t in trees})
    plan.add_generated(DATA_STORE, probe.absolute.encode())  # a container binds it (templates/slurm/base.sh.j2)
    _record(job, probe.absolute, files, trees)
    summary = {
        "store": probe.absolute,
        "files": len(files),
        "sent_files": sent.files_sent,
        "sent_bytes": sent.bytes_sent,
        "resumed_bytes": sum(sent.resumed.values()),
        "stored_already": sent.stored_already,
        "trees": len(trees),
        "trees_made": sent.trees_made,
        **({"via": sent.via} if sent.via else {}),
    }
    svc.store.update(job, extra={**job.extra, "data": summary})
    return sent, len(files), time.monotonic() - started


def _record(job: Job, absolute: str, files: list[Any], trees: list[Any]) -> None:
    directory = _usage_dir(job.site)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = {"dir": absolute, "files": {f.sha256: f.rel for f in files}, "trees": {t.digest: t.top for t in trees}}
    tmp = directory / f".{job.id}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(body))
    os.replace(tmp, directory / f"{job.id}.json")


def report(svc: Service, sent: Sent, count: int, seconds: float) -> None:
    resumed = f", {len(sent.resumed)} resumed" if sent.resumed else ""
    trees = f", {sent.trees_made} dataset tree(s) made" if sent.trees_made else ""
    svc.notify(
        f"data: {count} file(s), {sent.files_sent} sent ({sent.bytes_sent / 1e6:.1f} MB{resumed}), "
        f"{sent.stored_already} already in the site's store{trees}, in {seconds:.1f} s"
        + (f"; via {sent.via}" if sent.via else "")
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

    trees: list[str] = field(default_factory=list)  # dataset trees that link it

    @property
    def in_use(self) -> bool:
        return bool(self.jobs or self.site_dirs)


@dataclass
class TreeEntry:
    """A dataset tree (`jobs.datatree`): one `data:` directory, linked whole into job dirs."""

    digest: str
    files: list[str]  # the stored files it links (digests)
    size: int
    names: set[str] = field(default_factory=set)  # what tracked jobs call it in their dirs
    jobs: list[str] = field(default_factory=list)
    live: bool = False
    site_dirs: list[str] = field(default_factory=list)
    site_live: bool = False
    recent: bool = False

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
    trees: list[TreeEntry] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(e.size for e in self.entries)


Usage = tuple["Job", str, dict[str, str], dict[str, str]]  # job, store, digest -> name, tree -> name


def _usages(svc: Service, site: str) -> list[Usage]:
    """(tracked job, store path, digest -> name, tree -> name) for the site's jobs that have data."""
    out: list[Usage] = []
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
        out.append((job, str(body.get("dir", "")), dict(body.get("files", {})), dict(body.get("trees", {}))))
    return out


def _use(item: Entry | TreeEntry, job: Job, name: str) -> None:
    item.names.add(name)
    if job.id not in item.jobs:
        item.jobs.append(job.id)
    item.live = item.live or job.state not in states.FINAL_STATES


def stores(svc: Service, site: str | None) -> list[StoreView]:
    """The site's stores (the default one for the configured account, and every one a tracked job
    used), each with its entries, its dataset trees and who uses them."""
    from aifactory_cli.backends.datastore import DataStore

    site = svc.site_or_default(site)
    backend = svc.backend(site)
    from aifactory_cli.settings import current

    configured = svc.config.sites.get(site)
    account = current().account_for(None, configured.account if configured else None)
    usages = _usages(svc, site)
    dirs = [backend.data_dir_for(account, None), *sorted({u[1] for u in usages if u[1]})]
    store = DataStore(backend.transport, site)
    views: dict[str, StoreView] = {}
    for d in dirs:
        listing = store.listing(d)
        if listing.absolute is None or listing.absolute in views:
            continue
        entries = {h: Entry(h, size, recent=h in listing.recent) for h, size in listing.files.items()}
        by_inode = {i: h for h, i in listing.inodes.items()}
        trees: dict[str, TreeEntry] = {}
        for t, inodes in sorted(listing.trees.items()):
            linked = sorted({by_inode[i] for i in inodes if i in by_inode})
            trees[t] = TreeEntry(t, linked, sum(entries[h].size for h in linked), recent=t in listing.recent_trees)
            for h in linked:
                entries[h].trees.append(t)
        for job, used_dir, files, used_trees in usages:
            if used_dir != listing.absolute:
                continue
            for digest, name in files.items():
                if digest in entries:
                    _use(entries[digest], job, name)
            for t, name in used_trees.items():
                if t in trees:
                    _use(trees[t], job, name)
        views[listing.absolute] = StoreView(
            site,
            listing.absolute,
            sorted(entries.values(), key=lambda e: e.digest),
            listing.leftovers,
            listing.busy,
            trees=list(trees.values()),
        )
    if views:
        _site_users(svc, backend, store, account, list(views.values()))
    return list(views.values())


def _site_users(svc: Service, backend: Backend, store: Any, account: str | None, views: list[StoreView]) -> None:
    """Ask the site which job dirs link into the stores (jobs submitted from anywhere), in one round
    trip over the account's job-dir root and those of the jobs tracked here; a job dir counts as
    ended only when it is the dir of a job tracked here that has ended. A job dir that links a tree
    uses every file in it."""
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
        through: dict[str, set[str]] = {}
        for tree in view.trees:
            tree.site_dirs = sorted(links.users.get((view.path, f"tree:{tree.digest}"), ()))
            tree.site_live = any(d not in ended for d in tree.site_dirs)
            for h in tree.files:
                through.setdefault(h, set()).update(tree.site_dirs)
        for entry in view.entries:
            dirs = sorted(set(links.users.get((view.path, entry.digest), ())) | through.get(entry.digest, set()))
            entry.site_dirs = dirs
            entry.site_live = any(d not in ended for d in dirs)


def _up(path: str, levels: int) -> str:
    for _ in range(levels):
        path = path.rstrip("/").rpartition("/")[0] or "/"
    return path


def _free(item: Entry | TreeEntry, ended: bool) -> bool:
    return not item.recent and (not item.in_use or (ended and not item.live and not item.site_live))


def gc(
    svc: Service, site: str | None, dry_run: bool = False, ended: bool = False
) -> list[tuple[StoreView, list[Entry], list[TreeEntry], int]]:
    """Free the entries and dataset trees that no tracked job uses and no job dir on the site links to
    (with `ended`: those whose users all are jobs known here to have ended), none stored or found by a
    submission in the last ds.BUSY_MINUTES (its job may be about to link it), and the parts of cut
    transfers unchanged for ds.BUSY_MINUTES; an entry that a kept tree links is kept. Returns per store
    what is (or, dry, would be) freed and the bytes."""
    from aifactory_cli.backends.datastore import DataStore

    out = []
    views = stores(svc, site)
    for view in views:
        if view.unreadable:  # a job dir there may link to anything: free only old leftovers
            freed: list[Entry] = []
            trees: list[TreeEntry] = []
        else:
            trees = [t for t in view.trees if _free(t, ended)]
            kept = {t.digest for t in view.trees} - {t.digest for t in trees}
            freed = [e for e in view.entries if _free(e, ended) and not kept.intersection(e.trees)]
        size = sum(e.size for e in freed) + sum(view.leftovers.values())
        if not dry_run:
            backend = svc.backend(view.site)
            DataStore(backend.transport, view.site).remove(
                view.path, [e.digest for e in freed], sorted(view.leftovers), trees=[t.digest for t in trees]
            )
        out.append((view, freed, trees, size))
    return out
