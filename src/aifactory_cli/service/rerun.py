"""`rerun`: submit again what failed, with the spec the job was submitted with (its provenance, not
the spec file as it is now), on the same site, account, partition and QoS, through the same checks
as `submit`. For a sweep: only the failed elements (or the chosen ones), as an explicit list of
elements with their values; the new job records which job and elements it reruns."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aifactory_cli import states
from aifactory_cli.errors import BadInput
from aifactory_cli.jobs.model import Job
from aifactory_cli.service import elements

if TYPE_CHECKING:
    from aifactory_cli.service.session import Service
    from aifactory_cli.service.submit import Prepared


@dataclass
class RerunPlan:
    original: Job
    tasks: list[int] | None  # the original's elements to run again; None: the whole job
    prepared: Prepared


def _failed(state: str) -> bool:
    return state in states.FINAL_STATES and state != states.COMPLETED


def plan(svc: Service, ref: str, failed: bool = False, tasks: list[str] | None = None) -> RerunPlan:
    from aifactory_cli.service.submit import prepare
    from aifactory_cli.sites.resolve import Overrides
    from aifactory_cli.spec.model import load_spec_text

    job = svc.store.find(ref)
    if not job.spec_json:
        raise BadInput(
            f"job {job.id} ({job.name}) has no recorded spec (it was found by `sync` without one)",
            "submit the spec file again with `aifactory submit`",
        )
    if failed and tasks:
        raise BadInput("--failed and --task choose the elements two ways", "give one of them")
    if not job.is_final and (failed or not tasks):
        raise BadInput(
            f"job {job.id} ({job.name}) is still {job.state}: what failed is known when it has ended",
            f"wait for it (`aifactory wait {job.id}`), or name elements with --task",
        )
    spec = json.loads(job.spec_json)
    chosen: list[int] | None = None
    if tasks:
        chosen = elements.select(job, tasks)
    elif failed:
        if job.array_size:
            if not job.tasks:
                raise BadInput(
                    f"job {job.id}: the states of its elements are not known", f"run `aifactory status {job.id}`"
                )
            chosen = sorted(t.task_id for t in job.tasks if _failed(t.state))
            if not chosen:
                raise BadInput(f"no element of job {job.id} ({job.name}) failed: nothing to rerun")
        elif not _failed(job.state):
            raise BadInput(f"job {job.id} ({job.name}) ended {job.state}: nothing failed to rerun")
    if chosen is not None:
        values = elements.values_of(job)
        spec["matrix"] = [values[i] for i in chosen]
        if (spec.get("max_parallel") or 0) > len(chosen):
            spec["max_parallel"] = None  # more than the elements left: a warning otherwise
    path = Path(job.spec_path) if job.spec_path else None
    loaded = load_spec_text(json.dumps(spec, indent=1), source=f"the spec of job {job.id}", path=path)
    overrides = Overrides(
        account=job.extra.get("account"), partition=job.extra.get("partition"), qos=job.extra.get("qos")
    )
    prepared = prepare(svc, path or Path("."), job.site, overrides, loaded_spec=loaded)
    return RerunPlan(job, chosen, prepared)


def submit(svc: Service, rerun: RerunPlan) -> Job:
    from aifactory_cli.service.submit import submit as submit_prepared

    job = submit_prepared(svc, rerun.prepared)
    link = {"job": rerun.original.id, "elements": rerun.tasks}
    svc.store.update(job, extra={**job.extra, "rerun_of": link})
    return job
