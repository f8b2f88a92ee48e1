"""`aifactory sites list / show / validate / check`: site profiles for users and admins."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from aifactory_cli.cli import completion, output

app = typer.Typer(help="Site profiles: list, show, validate, check against the live site.", no_args_is_help=True)


@app.command("list", help="All known sites with GPU model, GPUs per node and verification date.")
def list_sites(as_json: bool = typer.Option(False, "--json", help="Print JSON only.")) -> None:
    from aifactory_cli.service.profiles import list_profiles

    rows, broken = list_profiles()
    if as_json:
        output.print_json({"sites": rows, "invalid": broken})
        return
    rows_text = []
    for r in rows:
        parts = r["partitions"]
        shown = ", ".join(parts[:3]) + (f" +{len(parts) - 3}" if len(parts) > 3 else "") if parts else "-"
        rows_text.append(
            [
                r["name"],
                r["gpu_model"] or "-",
                str(r["gpus_per_node"] or "-"),
                r["cpu_arch"] or "unknown",
                r["verified"] or "-",
                r["source"],
                shown,
            ]
        )
    output.plain_table(["SITE", "GPU", "GPUS/NODE", "ARCH", "VERIFIED", "SOURCE", "PARTITIONS"], rows_text)
    for b in broken:
        output.note(f"invalid profile {b['name']}: {b['error']}")


@app.command("show", help="The resolved profile of a site (extends applied), its sources and verification date.")
def show(
    site: str = typer.Argument(..., metavar="SITE", autocompletion=completion.sites),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    from aifactory_cli.service.profiles import show as show_profile

    view = show_profile(site)
    if as_json:
        output.print_json(view.to_json())
        return
    sys.stdout.write("".join(f"# {line}\n" for line in view.comments))
    sys.stdout.write(view.yaml)


@app.command("validate", help="Validate a profile file (schema, extends chain) and render sample jobs with it.")
def validate(
    file: Path = typer.Argument(..., metavar="FILE", help="A profile YAML file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    from aifactory_cli.service.profiles import validate as validate_profile

    results = validate_profile(file)
    if as_json:
        output.print_json({"file": str(file), "valid": True, "samples": results})
        return
    for r in results:
        output.out().print(f"{r['kind']} sample: partition {r['partition']}, {r['directives']}", markup=False)
    output.out().print(f"{file}: valid", markup=False)


@app.command("check", help="Connect to a site and compare it with its profile (partitions, limits, account, sacct).")
def check(
    site: str = typer.Argument(..., metavar="SITE", autocompletion=completion.sites),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    from aifactory_cli.service.sites import check_site

    with output.service() as svc:
        report = check_site(svc, site)
    if as_json:
        output.print_json(report)
    else:
        for item in report["checks"]:
            mark = {"ok": "ok  ", "drift": "DRIFT", "fail": "FAIL", "warn": "WARN", "info": "info"}[item["status"]]
            output.out().print(f"{mark} {item['check']}: {item['detail']}", markup=False)
    raise typer.Exit(0 if report["ok"] else 1)


@app.command(
    "add", help="Scaffold a profile NAME in your profiles dir from flags, or from a live cluster (--from-live)."
)
def add(
    name: str = typer.Argument(..., metavar="NAME", help="The new site's name (lower case)."),
    from_live: str | None = typer.Option(
        None, "--from-live", help="Read partitions and nodes from this site over SSH."
    ),
    extends: str | None = typer.Option(None, "--extends", help="Inherit everything else from this profile."),
    host: str | None = typer.Option(None, "--host", help="Login host (or ~/.ssh/config alias)."),
    port: int | None = typer.Option(None, "--port", help="SSH port."),
    user: str | None = typer.Option(None, "--user", help="SSH user."),
    gpu_vendor: str | None = typer.Option(None, "--gpu-vendor", help="amd or nvidia."),
    gpu_model: str | None = typer.Option(None, "--gpu-model", help="e.g. A100, MI250X."),
    gpus_per_node: int | None = typer.Option(None, "--gpus-per-node", help="GPUs per node as Slurm counts them."),
    account_required: bool | None = typer.Option(None, "--account-required/--no-account-required"),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing user profile."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    from aifactory_cli.service.profiles import add_site

    with output.service() as svc:  # connects only for --from-live
        added = add_site(
            svc,
            name,
            from_live=from_live,
            extends=extends,
            host=host,
            port=port,
            user=user,
            gpu_vendor=gpu_vendor,
            gpu_model=gpu_model,
            gpus_per_node=gpus_per_node,
            account_required=account_required,
            force=force,
        )
    target, samples = added["file"], added["samples"]
    if as_json:
        output.print_json(
            {
                "file": target,
                "profile": added["profile"],
                "samples": [{k: v for k, v in s.items() if k != "script"} for s in samples],
            }
        )
        return
    output.out().print(f"wrote {target}", markup=False)
    for s in samples:
        output.out().print(f"  {s['kind']} sample: partition {s['partition']}: {s['directives']}", markup=False)
