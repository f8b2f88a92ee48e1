"""`aifactory status [JOB...]`: refresh from the site(s) and show jobs."""

from __future__ import annotations

import typer

from aifactory_cli.cli import completion, output


def register(app: typer.Typer) -> None:
    app.command(
        "status",
        help="Refresh and show jobs: the given ones, or every live job (and those ended in the "
        "last 24 h). One query per site, at most every poll_interval seconds of the site's profile.",
    )(status)


def status(
    jobs: list[str] = typer.Argument(
        None,
        metavar="[JOB...]",
        help="Job id (or its start), SITE:SLURM_ID, or a name (its only live job, else its newest).",
        autocompletion=completion.jobs,
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only (with provenance for named jobs)."),
    cached: bool = typer.Option(False, "--cached", help="Do not ask the sites; show the stored state."),
    refresh: bool = typer.Option(
        False, "--refresh", help="Ask the sites even if they were asked less than the profile's poll_interval ago."
    ),
) -> None:
    with output.service() as svc:
        refs = jobs or []
        # --cached: the same jobs as without it (live ones, and those ended in the last 24 h), unasked
        found = (svc.jobs(refs) if refs else svc.cached_status()) if cached else svc.status(refs, force=refresh)
        if as_json:
            output.print_json(output.jobs_json(found, provenance=bool(refs)))
        else:
            output.jobs_table(found)
