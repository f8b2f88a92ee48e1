"""`aifactory render SPEC`: print the script submit would send."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from aifactory_cli.cli import completion, options, output


def register(app: typer.Typer) -> None:
    app.command("render", help="Print the batch script that submit would send (nothing is sent or recorded).")(render)


def render(
    spec: Path = typer.Argument(..., metavar="SPEC", help="Job spec YAML file."),
    site: str | None = typer.Option(None, "--site", "-s", help="Site name.", autocompletion=completion.sites),
    account: str | None = typer.Option(None, "--account", "-A", help="Slurm account/project."),
    partition: str | None = typer.Option(None, "--partition", "-p", help="Override the partition choice."),
    qos: str | None = typer.Option(None, "--qos", help="Slurm QoS."),
) -> None:
    from aifactory_cli.service.render import Overrides
    from aifactory_cli.service.render import render as render_spec
    from aifactory_cli.service.session import Service

    site = options.site_option(site)
    with Service(notify=output.note) as svc:  # nothing is sent: no progress bars, no prompts
        preview = render_spec(svc, spec, site, Overrides(account=account, partition=partition, qos=qos))
    for w in preview.warnings:
        output.note(f"warning: {w}")
    if preview.charge:
        output.note(f"estimated charge on {preview.site}: at most {preview.charge}")
    sys.stdout.write(preview.script)
