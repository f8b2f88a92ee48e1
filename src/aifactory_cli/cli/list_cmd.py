"""`aifactory list`: tracked jobs from the local store (no remote call)."""

from __future__ import annotations

import typer

from aifactory_cli.cli import completion, output
from aifactory_cli.states import ALL_STATES


def register(app: typer.Typer) -> None:
    app.command("list", help="List tracked jobs from the local store (nothing is asked of the sites).")(list_jobs)


def list_jobs(
    site: str | None = typer.Option(None, "--site", "-s", help="Only this site.", autocompletion=completion.sites),
    state: list[str] = typer.Option([], "--state", help="Only these states (repeatable), e.g. RUNNING."),
    name: str | None = typer.Option(None, "--name", help="Only jobs with this name."),
    limit: int | None = typer.Option(None, "--limit", "-n", min=1, help="At most N jobs (the newest)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    from aifactory_cli.errors import BadInput, did_you_mean

    site = output.site_option(site)
    wanted = [s.upper() for s in state]
    for s in wanted:
        if s not in ALL_STATES:
            guess = did_you_mean(s, list(ALL_STATES))
            raise BadInput(
                f"unknown state '{s}'", f"did you mean {guess}?" if guess else f"states: {', '.join(ALL_STATES)}"
            )
    with output.service() as svc:
        jobs = svc.store.query(site=site, states=wanted or None, name=name)
        if limit:
            jobs = jobs[-limit:]
        if as_json:
            output.print_json(output.jobs_json(jobs))
        else:
            output.jobs_table(jobs)
