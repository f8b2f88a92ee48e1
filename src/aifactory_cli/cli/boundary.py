"""The one error boundary: every error becomes a message, a hint and the contract's exit code
(no traceback unless --debug or AIFACTORY_DEBUG)."""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aifactory_cli import settings
from aifactory_cli.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, AifactoryError

if TYPE_CHECKING:
    import typer


@dataclass
class _State:
    debug: bool = False


STATE = _State()


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
