"""`aifactory usage [--site S]`: the allocation left, or the charge so far."""

from __future__ import annotations

import typer

from aifactory_cli.cli import completion, options, output


def register(app: typer.Typer) -> None:
    app.command(
        "usage",
        help="Allocation left where the site has a tool (lumi-allocations, jutil), else the "
        "charge so far this month from sacct and the profile's billing rules.",
    )(usage)


def usage(
    site: str | None = typer.Option(
        None, "--site", "-s", help="Site (default: the default site).", autocompletion=completion.sites
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    from aifactory_cli.service.broker import usage as site_usage

    site = options.site_option(site)
    with output.service() as svc:
        report = site_usage(svc, svc.site_or_default(site))
    if as_json:
        output.print_json(report)
        return
    output.out().print(f"{report['site']} ({report['source']})", markup=False)
    if "text" in report:
        output.out().print(report["text"], markup=False)
    else:
        output.out().print(f"  {report['jobs']} job(s) this month", markup=False)
        for unit, amount in report["charged"].items():
            output.out().print(f"  {amount:g} {unit}", markup=False)
