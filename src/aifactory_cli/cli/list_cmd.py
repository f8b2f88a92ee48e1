"""`aifactory list`: tracked jobs from the local store (no remote call)."""

from __future__ import annotations

import typer

from aifactory_cli.cli import completion, options, output


def register(app: typer.Typer) -> None:
    app.command("list", help="List tracked jobs from the local store (nothing is asked of the sites).")(list_jobs)


def list_jobs(
    site: str | None = typer.Option(None, "--site", "-s", help="Only this site.", autocompletion=completion.sites),
    state: list[str] = typer.Option([], "--state", help="Only these states (repeatable), e.g. RUNNING."),
    name: str | None = typer.Option(None, "--name", help="Only jobs with this name."),
    limit: int | None = typer.Option(None, "--limit", "-n", min=1, help="At most N jobs (the newest)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    from aifactory_cli.service.listing import list_jobs as query_jobs

    site = options.site_option(site)
    with output.service() as svc:
        jobs = query_jobs(svc, site=site, states=state, name=name, limit=limit)
        if as_json:
            output.print_json(output.jobs_json(jobs))
        else:
            output.jobs_table(jobs)
