"""`aifactory render SPEC`: print the script submit would send."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from aifactory_cli.cli import completion, output


def register(app: typer.Typer) -> None:
    app.command("render", help="Print the batch script that submit would send (nothing is sent or recorded).")(render)


def render(
    spec: Path = typer.Argument(..., metavar="SPEC", help="Job spec YAML file."),
    site: str | None = typer.Option(None, "--site", "-s", help="Site name.", autocompletion=completion.sites),
    account: str | None = typer.Option(None, "--account", "-A", help="Slurm account/project."),
    partition: str | None = typer.Option(None, "--partition", "-p", help="Override the partition choice."),
    qos: str | None = typer.Option(None, "--qos", help="Slurm QoS."),
) -> None:
    from aifactory_cli.service.session import Service
    from aifactory_cli.sites.resolve import Overrides

    site = output.site_option(site)
    with Service(notify=output.note) as svc:
        prepared = svc.prepare(spec, site, Overrides(account=account, partition=partition, qos=qos, preview=True))
        for w in prepared.resolved.warnings:
            output.note(f"warning: {w}")
        from aifactory_cli.sites.billing import estimate

        charge = estimate(prepared.resolved)
        if charge:
            output.note(f"estimated charge on {prepared.resolved.site}: at most {charge}")
        sys.stdout.write(prepared.script)
