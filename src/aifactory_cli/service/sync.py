"""`sync`: rebuild or refresh the local store from the site alone.

Every job dir holds `aifactory.json` (token, id, name, spec, provenance), `job.sh`, and
`slurm_job_id` (written on the site right after sbatch). One remote command lists them all; one
`sacct` then gives every job its state. Deleting the local state dir loses nothing.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import TYPE_CHECKING, Any

from aifactory_cli import paths, settings, states
from aifactory_cli.errors import RemoteError
from aifactory_cli.jobs import jobdir
from aifactory_cli.jobs.jobdir import listing_command, parse_listing
from aifactory_cli.jobs.model import Job, now_iso

if TYPE_CHECKING:
    from aifactory_cli.service.session import Service


def job_dir_glob(workdir_template: str, values: dict[str, str | None]) -> str:
    """A shell glob (literal parts quoted, unknown parts `*`) matching every job dir of a template."""
    path = workdir_template
    for prefix in ("$HOME/", "~/"):
        if path.startswith(prefix):
            path = path[len(prefix) :]
    out = []
    for literal, field in re.findall(r"([^{]*)(?:{([^}]*)})?", path):
        if literal:
            out.append(shlex.quote(literal))
        if field:
            value = values.get(field) if field != "job" else None
            out.append(shlex.quote(value) if value else "*")
    return "".join(out)


def sync_site(svc: Service, site: str) -> tuple[list[Job], list[Job]]:
    """Recover jobs of `site` missing from the store, then refresh every live job of the site."""
    loaded = svc.profile(site)
    backend = svc.backend(site)
    svc.settle_in_doubt(site)
    if loaded.profile.scheduler == "local":
        glob = shlex.quote(str(paths.state_dir() / "local" / "jobs")) + "/*"
    else:
        mine = svc.config.for_site(site)
        account = settings.current().account_for(None, mine.account)
        user = getattr(backend, "remote_user", lambda: None)()
        values = {**loaded.profile.workdir_values(account), "account": account, "user": user, "site": site}
        values["name"] = None
        glob = job_dir_glob(loaded.profile.workdir, values)
    result = backend.transport.run(listing_command(glob))
    if not result.ok:
        raise RemoteError(f"cannot list the job dirs on {site}: {result.stderr.strip()}")
    added: list[Job] = []
    for rec in parse_listing(result.stdout):
        meta = rec["meta"]
        if meta.get("site") not in (None, site) or svc.store.by_token(meta["token"]) is not None:
            continue
        job = _recovered(svc, site, rec)
        if job is None:
            continue
        svc.store.add(job)
        added.append(job)
    live = svc.store.query(site=site, live_only=True)
    svc.refresh(live, force=True)
    return added, sorted({j.id: j for j in [*added, *live]}.values(), key=lambda j: (j.created_at, j.id))


def _recovered(svc: Service, site: str, rec: dict[str, Any]) -> Job | None:
    """The store's record of a job dir found on the site, or None (with a notice) when its metadata
    cannot be used."""
    meta = rec["meta"]
    now = now_iso()
    job_id = str(meta.get("id") or meta["token"][:8])
    if svc.store.get(job_id) is not None:  # another job has that id here: take the token's prefix
        job_id = meta["token"][:8]
    if svc.store.get(job_id) is not None:
        svc.notify(f"{rec['workdir']}: its job id {job_id} is taken by another job here; skipped")
        return None
    try:
        return Job(
            id=job_id,
            token=meta["token"],
            name=meta.get("name", "job"),
            site=site,
            state=states.UNKNOWN if rec["slurm_job_id"] else states.PREPARED,
            created_at=meta.get("created_at", now),
            updated_at=now,
            slurm_job_id=rec["slurm_job_id"],
            workdir=rec["workdir"],
            array_size=int(meta.get("array_size") or 0),
            submitted_at=meta.get("created_at"),
            spec_json=json.dumps(meta.get("spec")) if meta.get("spec") else None,
            script=rec["script"] or None,
            profile_name=meta.get("profile"),
            profile_version=meta.get("profile_version"),
            provenance_hash=meta.get("provenance_hash"),
            reason="recovered by sync",
            extra={
                "download": meta.get("download") or [],
                "recovered": True,
                **({"packed": True} if meta.get("packed") else {}),
                # a checkpointed run: its segments are read from the job dir by the refresh below
                **({"segmented": str(meta["segmented"]), "segments": []} if meta.get("segmented") else {}),
            },
        )
    except (TypeError, ValueError) as exc:  # damaged metadata on the site: not a bug in aifactory
        svc.notify(f"{rec['workdir']}: cannot read its {jobdir.META} ({exc}); skipped")
        return None
