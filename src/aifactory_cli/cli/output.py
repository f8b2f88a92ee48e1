"""Console output every command shares: stdout for results (tables or JSON), stderr for progress
and notes; and the `Service` wired to this console."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aifactory_cli import settings

if TYPE_CHECKING:
    from rich.console import Console

    from aifactory_cli.service.listing import Job

SCHEMA_VERSION = 1


def is_tty(stream: Any = None) -> bool:
    stream = stream or sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def interactive() -> bool:
    """A person at a terminal (prompts and progress bars allowed)."""
    if settings.current().noninteractive:  # CI or AIFACTORY_NONINTERACTIVE
        return False
    return is_tty(sys.stdin) and is_tty(sys.stderr)


_consoles: dict[str, Console] = {}


def out() -> Console:
    if "out" not in _consoles:
        from rich.console import Console

        _consoles["out"] = Console(highlight=False, soft_wrap=True)
    return _consoles["out"]


def err() -> Console:
    if "err" not in _consoles:
        from rich.console import Console

        _consoles["err"] = Console(stderr=True, highlight=False, soft_wrap=True)
    return _consoles["err"]


def note(message: str) -> None:
    """Progress/log lines: always stderr, so stdout stays clean for JSON and scripts. Plain
    text: no need to import rich for a line."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def print_json(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"schema_version": SCHEMA_VERSION, **data}, indent=2, default=str) + "\n")
    sys.stdout.flush()


def jobs_json(jobs: list[Job], provenance: bool = False) -> dict[str, Any]:
    return {"jobs": [j.to_json(provenance=provenance) for j in jobs]}


def service(**kwargs: Any) -> Any:
    from aifactory_cli.service.session import Service

    return Service(
        notify=note, progress_factory=progress_factory() if is_tty() else None, interactive=interactive(), **kwargs
    )


def progress_factory() -> Callable[[int, str], Any]:
    """Rich progress bars for transfers (only on a terminal; CI gets none)."""

    def make(total: int, what: str) -> Any:
        return _Progress(total, what)

    return make


class _Progress:
    THRESHOLD = 1 << 20  # no bar for less than 1 MiB

    def __init__(self, total: int, what: str) -> None:
        self.total = total
        self.what = what
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if self.total and self.total < self.THRESHOLD:
            return lambda n: None
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.bar = Progress(
            TextColumn(self.what),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err(),
            transient=True,
        )
        self.bar.start()
        self.task = self.bar.add_task(self.what, total=self.total or None)
        return lambda n: self.bar.advance(self.task, n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def plain_table(headers: list[str], rows: list[list[str]]) -> None:
    """Columns padded to their widest cell, never wrapped (readable in logs and narrow pipes)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        sys.stdout.write("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() + "\n")


STATE_STYLES = {
    "COMPLETED": "green",
    "RUNNING": "cyan",
    "PENDING": "yellow",
    "PREPARED": "yellow",
    "FAILED": "red",
    "CANCELLED": "magenta",
    "TIMEOUT": "red",
    "OUT_OF_MEMORY": "red",
    "NODE_FAIL": "red",
    "PREEMPTED": "magenta",
    "UNKNOWN": "bright_black",
}


def _age(iso: str | None, until: str | None = None) -> str:
    import datetime as dt

    if not iso:
        return ""
    try:
        start = dt.datetime.fromisoformat(iso)
        end = dt.datetime.fromisoformat(until) if until else None
    except ValueError:
        return ""
    if start.tzinfo is None:
        start = start.astimezone()
    if end is None:
        end = dt.datetime.now(dt.timezone.utc)
    elif end.tzinfo is None:
        end = end.astimezone()
    seconds = max(0, int((end - start).total_seconds()))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _task_counts(job: Job) -> str:
    if not job.tasks:
        return ""
    counts: dict[str, int] = {}
    for t in job.tasks:
        counts[t.state] = counts.get(t.state, 0) + 1
    return " (" + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) + ")"


def _times(job: Job) -> tuple[str, str, str]:
    """EXIT, QUEUED and RUNNING: an exit code only once the job has ended; QUEUED from submission
    to the real start (to the end for a job that never started, to now while pending); RUNNING
    from the real start to the end (or now)."""
    exit_code = "" if job.exit_code is None or not job.is_final else str(job.exit_code)
    if not job.submitted_at:
        queued = ""
    elif job.started_at or job.ended_at:
        queued = _age(job.submitted_at, job.started_at or job.ended_at)
    elif job.is_final:
        queued = ""  # ended without a known start or end: no honest figure
    else:
        queued = _age(job.submitted_at)
    running = _age(job.started_at, job.ended_at) if job.started_at else ""
    return exit_code, queued, running


def jobs_table(jobs: list[Job], title: str | None = None) -> None:
    """A rich table with state colours on a terminal; plain aligned columns in pipes and logs."""
    if not jobs:
        print("no jobs")
        return
    if not is_tty(sys.stdout):
        plain_table(
            ["ID", "NAME", "SITE", "SLURM ID", "STATE", "EXIT", "QUEUED", "RUNNING", "REASON"],
            [
                [
                    j.id,
                    j.name,
                    j.site,
                    j.slurm_job_id or "",
                    j.state + _task_counts(j),
                    *_times(j),
                    j.reason or "",
                ]
                for j in jobs
            ],
        )
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for col in ("ID", "NAME", "SITE", "SLURM ID", "STATE", "EXIT", "QUEUED", "RUNNING", "REASON"):
        table.add_column(col, overflow="fold")
    for j in jobs:
        exit_code, queued, running = _times(j)
        state = Text(j.state, style=STATE_STYLES.get(j.state, ""))
        state.append(_task_counts(j))
        table.add_row(
            j.id,
            j.name,
            j.site,
            j.slurm_job_id or "",
            state,
            exit_code,
            queued,
            running,
            j.reason or "",
        )
    out().print(table)
