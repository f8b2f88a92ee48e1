"""JUnit XML reports of waited-for jobs, as CI systems (GitHub, GitLab, Jenkins) display them:
one test case per job, or per array element."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from aifactory_cli import states
from aifactory_cli.service import elements

if TYPE_CHECKING:
    from aifactory_cli.jobs.model import Job
    from aifactory_cli.service.session import Service

TAIL_BYTES = 4000


def _seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return 0.0
    try:
        a, b = dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end)
    except ValueError:
        return 0.0
    if (a.tzinfo is None) != (b.tzinfo is None):
        a, b = a.replace(tzinfo=None), b.replace(tzinfo=None)
    return max(0.0, (b - a).total_seconds())


def _tail(svc: Service, job: Job, task: int | None) -> str:
    try:
        data = svc.backend(job.site).read_log(job, stderr=True, task=task)
    except Exception as exc:
        return f"(stderr not available: {exc})"
    return data[-TAIL_BYTES:].decode(errors="replace")


def write_junit(svc: Service, jobs: list[Job], path: Path) -> None:
    cases: list[tuple[Job, int | None, str, int | None, float, str | None]] = []
    for job in jobs:
        if job.tasks:
            for t in job.tasks:
                cases.append((job, t.task_id, t.state, t.exit_code, _seconds(t.started_at, t.ended_at), t.reason))
        else:
            cases.append((job, None, job.state, job.exit_code, _seconds(job.started_at, job.ended_at), job.reason))
    failures = sum(1 for c in cases if c[2] != states.COMPLETED)
    suite = ET.Element(
        "testsuite",
        name="aifactory",
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=f"{sum(c[4] for c in cases):.1f}",
        timestamp=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
    )
    for job, task, state, code, seconds, reason in cases:
        name = job.name
        if task is not None:  # a sweep element: named by its values too, `bench[2] LR=-1`
            values = elements.values_of(job)
            text = elements.values_text(values[task]) if 0 <= task < len(values) else ""
            name = f"{job.name}[{task}]" + (f" {text}" if text else "")
        case = ET.SubElement(suite, "testcase", classname=f"aifactory.{job.site}", name=name, time=f"{seconds:.1f}")
        props = ET.SubElement(case, "properties")
        for key, value in (
            ("id", job.id),
            ("slurm_job_id", job.slurm_job_id),
            ("state", state),
            ("exit_code", code),
            ("workdir", job.workdir),
        ):
            ET.SubElement(props, "property", name=key, value="" if value is None else str(value))
        if state != states.COMPLETED:
            message = f"{state}" + (f" exit {code}" if code is not None else "") + (f" ({reason})" if reason else "")
            failure = ET.SubElement(case, "failure", message=message, type=state)
            failure.text = _tail(svc, job, task)
    root = ET.Element("testsuites")
    root.append(suite)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)
