"""What every command shares: options, the error boundary, console output and JSON."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aifactory_cli import settings
from aifactory_cli.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, AifactoryError, BadInput

if TYPE_CHECKING:
    import typer
    from rich.console import Console

    from aifactory_cli.jobs.store import Job

SCHEMA_VERSION = 1


@dataclass
class _State:
    debug: bool = False


STATE = _State()


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


def report_error(exc: AifactoryError) -> int:
    where = f"{exc.where}: " if exc.where else ""
    sys.stderr.write(f"error: {where}{exc.message}\n")
    if exc.hint:
        sys.stderr.write(f"  hint: {exc.hint}\n")
    if STATE.debug and exc.__cause__ is not None:
        traceback.print_exception(exc.__cause__, file=sys.stderr)
    return exc.exit_code


def _click_exception_type() -> type[Exception]:
    """click's base exception: typer >= 0.26 vendors click as typer._click, older typer runs on click.

    Looked up by name so that mypy sees the same code whichever typer the venv has (a try/except
    import of both made mypy fail on a fresh venv without click: unused ignore + no-redef)."""
    import importlib

    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            found: type[Exception] = importlib.import_module(name).ClickException
            return found
        except ImportError:
            continue
    raise ImportError("neither typer._click nor click is installed")  # pragma: no cover


def run_app(app: typer.Typer, argv: list[str] | None = None) -> int:
    """The one error boundary: message + hint and the contract's exit code, no traceback unless --debug."""
    import typer

    ClickException = _click_exception_type()

    args = sys.argv[1:] if argv is None else argv
    STATE.debug = "--debug" in args[:2] or settings.current().debug
    try:
        # with standalone_mode=False, click returns the code of a typer.Exit instead of raising it
        rv = app(args=args, prog_name="aifactory", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except AifactoryError as exc:
        return report_error(exc)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except ClickException as exc:
        exc.show()  # type: ignore[attr-defined]  # every ClickException has show()
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:
        if STATE.debug:
            traceback.print_exc()
        sys.stderr.write(
            f"error: internal error: {type(exc).__name__}: {exc}\n  hint: rerun with --debug "
            "for the traceback, and please report it\n"
        )
        return EXIT_INTERNAL


def site_option(value: str | None, option: str = "--site") -> str | None:
    """An explicitly empty --site (CI's `--site "$SITE"` with SITE unset) is an error, not the default site."""
    if value is not None and not value.strip():
        raise BadInput(
            f"{option} is empty",
            f"pass a site name (see `aifactory sites list`), or leave out {option} for the default site; "
            f'in a script, check the variable behind {option} "$VAR" is set',
        )
    return value


def site_list_option(value: str | None, option: str = "--sites") -> list[str] | None:
    """A comma-separated list of sites; None if not given; an empty list or an empty name is an error."""
    if value is None:
        return None
    if not value.strip():
        raise BadInput(
            f"{option} is empty",
            f"pass site names (e.g. {option} lumi,leonardo), or leave out {option} for the sites with an account "
            f'in the config; in a script, check the variable behind {option} "$VAR" is set',
        )
    names = [s.strip() for s in value.split(",")]
    if not all(names):
        raise BadInput(
            f"{option} {value!r} has an empty site name",
            f"separate site names with single commas, e.g. {option} lumi,leonardo",
        )
    from aifactory_cli.errors import NotFound, did_you_mean
    from aifactory_cli.paths import available_sites

    known = available_sites()
    for name in names:
        if name not in known:
            guess = did_you_mean(name, known) or did_you_mean(name.lower(), known)
            raise NotFound(
                f"unknown site '{name}' in {option}",
                f"did you mean '{guess}'?" if guess else f"known sites: {', '.join(known)}",
            )
    return list(dict.fromkeys(names))  # a site named twice is planned once


def check_timeout(value: float | None, option: str = "--timeout") -> None:
    """A number of seconds, finite and not negative (click lets nan and -1 through)."""
    import math

    if value is not None and not (math.isfinite(value) and value >= 0):
        raise BadInput(f"{option} {value}: not a number of seconds", f"e.g. {option} 3600 (0 = check once)")


def _nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists (`exists()` is False below a regular file, too)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_file(path: Path | str | None, option: str, *, make_parents: bool = False) -> Path | None:
    """Fail now (bad input, exit 2) if the file `option` names could not be written later, after a job was
    submitted or waited for: the path must not be a directory, and its directory must exist (or, with
    `make_parents`, be creatable) and be writable."""
    if path is None:
        return None
    if isinstance(path, str) and not path.strip():
        raise BadInput(f"{option} is empty", f"give a file path, or leave out {option}")
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"{option} {path}: is a directory", f"give a file path, e.g. {option} {path / 'out.txt'}")
    parent = path.parent
    if make_parents:
        parent = _nearest_existing(parent)
    if not parent.exists():
        raise BadInput(
            f"{option} {path}: the directory {parent} does not exist",
            f"create it first (mkdir -p {parent}), or pick a path in an existing directory",
        )
    if not parent.is_dir():
        raise BadInput(
            f"{option} {path}: {parent} is not a directory", "pick a path whose parent is a directory, not a file"
        )
    writable = os.access(path, os.W_OK) if path.exists() else os.access(parent, os.W_OK | os.X_OK)
    if not writable:
        raise BadInput(f"{option} {path}: not writable", "pick a path you can write to")
    return path


def check_output_dir(path: Path, option: str) -> Path:
    """Fail now (bad input, exit 2) if the directory `option` names could not be created or written into:
    it must be a directory if it exists, and its closest existing ancestor must be a writable directory."""
    if path.exists() and not path.is_dir():
        raise BadInput(
            f"{option} {path}: is a file, not a directory",
            f"give a directory (created if missing), e.g. {option} {path.with_name(path.name + '.d')}",
        )
    base = _nearest_existing(path)
    if not base.is_dir():
        raise BadInput(f"{option} {path}: {base} is a file, not a directory", "pick a path under a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise BadInput(f"{option} {path}: {base} is not writable", "pick a directory you can write to")
    return path


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
                    "" if j.exit_code is None else str(j.exit_code),
                    _age(j.submitted_at, j.started_at) if j.submitted_at else "",
                    _age(j.started_at, j.ended_at) if j.started_at else "",
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
        queued = _age(j.submitted_at, j.started_at) if j.submitted_at else ""
        running = _age(j.started_at, j.ended_at) if j.started_at else ""
        state = Text(j.state, style=STATE_STYLES.get(j.state, ""))
        state.append(_task_counts(j))
        table.add_row(
            j.id,
            j.name,
            j.site,
            j.slurm_job_id or "",
            state,
            "" if j.exit_code is None else str(j.exit_code),
            queued,
            running,
            j.reason or "",
        )
    out().print(table)
