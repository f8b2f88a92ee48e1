"""`aifactory sync [--site S]`: rebuild/refresh the local store from what the site knows."""

from __future__ import annotations

import typer

from aifactory_cli.cli import completion, options, output


def register(app: typer.Typer) -> None:
    app.command("sync", help="Rebuild or refresh the local store from the site alone (job dirs + Slurm comments).")(
        sync
    )


def sync(
    site: str | None = typer.Option(
        None, "--site", "-s", help="Site (default: the default site).", autocompletion=completion.sites
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    from aifactory_cli.service.sync import sync_site

    site = options.site_option(site)
    with output.service() as svc:
        name = svc.site_or_default(site)
        added, refreshed = sync_site(svc, name)
        if as_json:
            output.print_json({"site": name, "added": [j.id for j in added], **output.jobs_json(refreshed)})
        else:
            output.note(f"{name}: {len(added)} job(s) recovered, {len(refreshed)} refreshed")
            output.jobs_table(refreshed)
