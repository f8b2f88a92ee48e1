"""`aifactory cancel JOB...`."""

from __future__ import annotations

import typer

from aifactory_cli.cli import completion, output


def register(app: typer.Typer) -> None:
    app.command("cancel", help="Cancel jobs (one scancel per site).")(cancel)


def cancel(
    jobs: list[str] = typer.Argument(..., metavar="JOB...", autocompletion=completion.jobs),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    with output.service() as svc:
        found = svc.cancel(jobs)  # it says which had already ended
        if as_json:
            output.print_json(output.jobs_json(found))
