"""`aifactory plan SPEC`: where can it run, at what charge, starting when."""

from __future__ import annotations

from pathlib import Path

import typer

from aifactory_cli.cli import completion, options, output


def register(app: typer.Typer) -> None:
    app.command(
        "plan",
        help="Compare sites for a spec: can it run, partition, estimated charge, and the start "
        "estimate from `sbatch --test-only`. Sites: --sites, else those with an account in the config.",
    )(plan)


def plan(
    spec: Path = typer.Argument(..., metavar="SPEC"),
    sites: str | None = typer.Option(
        None, "--sites", help="Comma-separated site names.", autocompletion=completion.site_list
    ),
    prefer: str = options.prefer_option("Rank by `start` (soonest) or `cost` (cheapest)."),
    account: str | None = typer.Option(None, "--account", "-A", help="Account for every site (default: config)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    from aifactory_cli.service.broker import compare

    site_names = options.site_list_option(sites)
    with output.service() as svc:
        rows = compare(svc, str(spec), site_names, prefer, account=account)
    if as_json:
        output.print_json({"prefer": prefer, "sites": [r.to_json() for r in rows]})
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("SITE", "RUNS", "PARTITION", "EST. START", "EST. CHARGE", "WHY NOT / NOTES"):
        table.add_column(col, overflow="fold")
    for r in rows:
        charge = f"{r.charge:g} {r.unit}" if r.charge is not None else "-"
        table.add_row(
            r.site,
            "yes" if r.ok else "no",
            r.partition or "-",
            r.start or "-",
            charge,
            r.reason or "; ".join(r.warnings),
        )
    output.out().print(table)
