"""Option types and checks every command shares. Each check fails as bad input (exit 2) before
anything is submitted, waited for or downloaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from aifactory_cli.errors import BadInput


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
    from aifactory_cli.service.profiles import check_site_names

    return check_site_names(names, option)  # a site named twice is planned once


def _check_prefer(value: str) -> str:
    from aifactory_cli.service.broker import check_prefer

    return check_prefer(value)


def _prefer_choices(incomplete: str) -> list[str]:
    from aifactory_cli.service.broker import PREFERENCES

    return [c for c in PREFERENCES if c.startswith(incomplete)]


def prefer_option(help: str) -> Any:
    """`--prefer start|cost` for `plan` and `submit --site auto`: checked while the command line is
    parsed, so a wrong value is refused (exit 2) before anything is planned or submitted."""
    return typer.Option("start", "--prefer", help=help, callback=_check_prefer, autocompletion=_prefer_choices)


def parse_timeout(value: str | None, option: str = "--timeout") -> float | None:
    """Seconds from `--timeout`: a number of seconds or a duration (`90s`, `10m`, `1h`, `HH:MM:SS`)."""
    from aifactory_cli.service.timeouts import parse_timeout as parse

    return None if value is None else parse(value, option)


def timeout_option(help: str) -> Any:
    return typer.Option(
        None, "--timeout", metavar="DURATION", help=f"{help} DURATION: seconds, or 90s, 10m, 1h, HH:MM:SS."
    )


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
