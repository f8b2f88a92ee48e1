"""`aifactory sites list / show / validate / check`: site profiles for users and admins."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from aifactory_cli.cli import completion, output

app = typer.Typer(help="Site profiles: list, show, validate, check against the live site.", no_args_is_help=True)


def _profile_row(name: str) -> dict[str, Any]:
    from aifactory_cli.sites.profile import load_profile

    lp = load_profile(name)
    p = lp.profile
    return {
        "name": name,
        "description": p.description,
        "scheduler": p.scheduler,
        "gpu_model": p.gpu.model if p.gpu else None,
        "gpu_vendor": p.gpu.vendor if p.gpu else None,
        "gpus_per_node": p.gpu.per_node if p.gpu else 0,
        "cpu_arch": p.cpu_arch,
        "partitions": list(p.partitions),
        "verified": p.verified.isoformat() if p.verified else None,
        "file": str(lp.files[-1]),
    }


@app.command("list", help="All known sites with GPU model, GPUs per node and verification date.")
def list_sites(as_json: bool = typer.Option(False, "--json", help="Print JSON only.")) -> None:
    from aifactory_cli.errors import AifactoryError
    from aifactory_cli.sites.profile import available_sites

    rows, broken = [], []
    for name in available_sites():
        try:
            rows.append(_profile_row(name))
        except AifactoryError as exc:
            broken.append({"name": name, "error": str(exc)})
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
                shown,
            ]
        )
    output.plain_table(["SITE", "GPU", "GPUS/NODE", "ARCH", "VERIFIED", "PARTITIONS"], rows_text)
    for b in broken:
        output.note(f"invalid profile {b['name']}: {b['error']}")


@app.command("show", help="The resolved profile of a site (extends applied), its sources and verification date.")
def show(
    site: str = typer.Argument(..., metavar="SITE", autocompletion=completion.sites),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    import yaml

    from aifactory_cli.sites.profile import load_profile

    lp = load_profile(site)
    data = lp.profile.model_dump(mode="json", exclude_none=True)
    if as_json:
        output.print_json({"site": data, "files": [str(f) for f in lp.files], "digest": lp.digest})
        return
    p = lp.profile
    sys.stdout.write(f"# site {site}: {p.description}\n")
    sys.stdout.write(f"# from: {' <- '.join(str(f) for f in reversed(lp.files))}\n")
    sys.stdout.write(f"# verified: {p.verified or 'never'}\n")
    for s in p.sources:
        sys.stdout.write(f"# source: {s.title} <{s.url}>{' (' + s.snapshot + ')' if s.snapshot else ''}\n")
    for n in [*p.ssh.notes, *p.notes]:
        sys.stdout.write(f"# note: {n}\n")
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False, width=110))


@app.command("validate", help="Validate a profile file (schema, extends chain) and render sample jobs with it.")
def validate(
    file: Path = typer.Argument(..., metavar="FILE", help="A profile YAML file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    from aifactory_cli.sites.sample import render_samples

    results = render_samples(file)
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
            mark = {"ok": "ok  ", "drift": "DRIFT", "fail": "FAIL", "info": "info"}[item["status"]]
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
    import yaml

    from aifactory_cli import paths
    from aifactory_cli.errors import AifactoryError, BadInput
    from aifactory_cli.sites.profile import SITE_NAME_RE
    from aifactory_cli.sites.sample import render_samples
    from aifactory_cli.sites.scaffold import LIVE_COMMAND, install_profile, partitions_from_live, scaffold

    if not SITE_NAME_RE.match(name):
        raise BadInput(f"'{name}' is not a site name", "use lower-case letters, digits, '-' and '_'")
    target = paths.user_profiles_dir() / f"{name}.yaml"
    if target.exists() and not force:
        raise BadInput(f"{target} exists", "pass --force to overwrite it, or pick another name")
    if extends == name:
        from aifactory_cli.sites.profile import find_profile_file

        if find_profile_file(name, exclude=target) is None:  # it would extend only itself
            raise BadInput(
                f"--extends {name}: there is no other profile named {name} to extend",
                "extend a built-in site (`aifactory sites list`), or leave out --extends",
            )
    partitions = None
    source = "aifactory sites add (flags)"
    live_ssh: dict[str, Any] = {}
    if from_live:
        with output.service() as svc:
            live = svc.profile(from_live).profile
            # how we reached it (key, known_hosts, pinned host keys, jump host, persist): without these
            # the new profile could not log in where --from-live just did
            live_ssh = live.ssh.model_dump(
                mode="json", exclude_defaults=True, exclude={"host", "port", "user", "notes"}
            )
            result = svc.backend(from_live).transport.run(LIVE_COMMAND)
            if not result.ok:
                from aifactory_cli.errors import RemoteError

                raise RemoteError(f"scontrol failed on {from_live}: {result.stderr.strip()}")
            part_text, _, node_text = result.stdout.partition("@@AIF-NODES@@\n")
            partitions, facts = partitions_from_live(part_text, node_text)
            source = f"scontrol show partition/node on {from_live}, {__import__('datetime').date.today()}"
            host = host or live.ssh.host
            port = port or live.ssh.port
            user = user or live.ssh.user
            if not gpus_per_node:
                gpus_per_node = max((p.get("gpus_per_node", 0) for p in partitions.values()), default=0) or None
            gpu_model = gpu_model or (facts["gpu_models"][0] if facts["gpu_models"] else None)
            if gpus_per_node and not gpu_vendor:
                gpu_vendor = live.gpu.vendor if live.gpu else None
    data = scaffold(
        name,
        host=host,
        port=port,
        user=user,
        extends=extends,
        gpu_vendor=gpu_vendor,
        gpu_model=gpu_model,
        gpus_per_node=gpus_per_node,
        account_required=account_required,
        partitions=partitions,
        source=source,
    )
    if live_ssh and not extends:  # with --extends the ssh block is inherited anyway
        data["ssh"] = {**data.get("ssh", {}), **{k: v for k, v in live_ssh.items() if k not in data.get("ssh", {})}}
    paths.ensure_private_dir(target.parent)
    existed = target.exists()
    text = "# Scaffolded by `aifactory sites add`: check every value against the site's documentation\n"
    text += yaml.safe_dump(data, sort_keys=False)
    try:  # checked before it is put in place: a broken profile would hide a built-in of the same name
        samples = install_profile(target, text, render_samples)
    except AifactoryError as exc:
        kept = f"{target} was left as it was" if existed else f"{target} was not written"
        exc.hint = f"{exc.hint}; {kept}" if exc.hint else f"{kept}; fix the flags and rerun"
        raise
    if as_json:
        output.print_json(
            {
                "file": str(target),
                "profile": data,
                "samples": [{k: v for k, v in s.items() if k != "script"} for s in samples],
            }
        )
        return
    output.out().print(f"wrote {target}", markup=False)
    for s in samples:
        output.out().print(f"  {s['kind']} sample: partition {s['partition']}: {s['directives']}", markup=False)
