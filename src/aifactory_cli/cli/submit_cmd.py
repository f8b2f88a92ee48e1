"""`aifactory submit SPEC...`: resolve, render, stage and submit (or --dry-run)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from aifactory_cli.cli import completion, options, output
from aifactory_cli.errors import BadInput


def register(app: typer.Typer) -> None:
    app.command(
        "submit",
        help="Submit job spec(s) to a site. Several specs are submitted as a chain: each one starts "
        "after the previous one succeeded.",
    )(submit)


def submit(
    specs: list[Path] = typer.Argument(..., metavar="SPEC...", help="Job spec YAML file(s)."),
    site: str | None = typer.Option(
        None,
        "--site",
        "-s",
        help="Site name (default: AIFACTORY_SITE, the config's default_site, or local); `auto` lets the broker "
        "pick among the sites with an account (see `aifactory plan`).",
        autocompletion=completion.sites_or_auto,
    ),
    prefer: str = options.prefer_option("With --site auto: pick the soonest `start` or the `cost`."),
    sites: str | None = typer.Option(
        None,
        "--sites",
        help="With --site auto: the sites to choose from (comma-separated).",
        autocompletion=completion.site_list,
    ),
    account: str | None = typer.Option(None, "--account", "-A", help="Slurm account/project (default: config)."),
    partition: str | None = typer.Option(None, "--partition", "-p", help="Override the automatic partition choice."),
    qos: str | None = typer.Option(None, "--qos", help="Slurm QoS, where the site uses one."),
    after: list[str] = typer.Option([], "--after", help="Start only after JOB completed successfully (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the script(s); submit nothing."),
    wait: bool = typer.Option(False, "--wait", "-w", help="Block until the job(s) end; exit 0 only if all COMPLETED."),
    follow: bool = typer.Option(False, "--follow", "-f", help="With --wait: stream the job's output to stderr."),
    timeout: str | None = options.timeout_option("With --wait: give up after DURATION (exit 5)."),
    job_id_file: Path | None = typer.Option(
        None, "--job-id-file", help="Write the submitted job ids (one per line) to this file."
    ),
    cancel_on_interrupt: bool | None = typer.Option(
        None,
        "--cancel-on-interrupt/--no-cancel-on-interrupt",
        help="With --wait, on Ctrl-C or SIGTERM: cancel the jobs, or never cancel them (stop watching; they run "
        "on). Default: Ctrl-C at a terminal stops watching; without a terminal, under CI, or on SIGTERM, cancel. "
        "After a cancel, the final states are reported; exit 130 (143 on SIGTERM).",
    ),
    junit: Path | None = typer.Option(None, "--junit", help="With --wait: write a JUnit XML report to PATH."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only on stdout."),
) -> None:
    from aifactory_cli.service.render import Overrides
    from aifactory_cli.service.render import dry_run as render_dry_run

    # argument checks first: nothing is submitted if one of them fails (--prefer: while parsing)
    for given, option in ((follow, "--follow"), (timeout is not None, "--timeout"), (junit is not None, "--junit")):
        if given and not wait:
            raise BadInput(f"{option} only applies with --wait", f"add --wait, or leave out {option}")
    seconds = options.parse_timeout(timeout)
    site = options.site_option(site)
    site_names = options.site_list_option(sites)
    options.check_output_file(job_id_file, "--job-id-file")
    options.check_output_file(junit, "--junit", make_parents=True)
    overrides = Overrides(account=account, partition=partition, qos=qos)
    with output.service() as svc:
        if site == "auto":
            from aifactory_cli.service.broker import choose_site

            site, why = choose_site(svc, str(specs[0]), site_names, overrides, prefer)
            output.note(why)
        if dry_run:
            # resolve and render everything: nothing is sent, and a bad spec fails before any output
            previews = render_dry_run(svc, specs, site, overrides, after)
            for p in previews:
                for w in p.warnings:
                    output.note(f"warning: {w}")
                if p.charge:
                    output.note(f"estimated charge on {p.site}: at most {p.charge}")
                if not as_json:
                    if len(previews) > 1:
                        sys.stdout.write(f"# ---- {p.spec} ----\n")
                    sys.stdout.write(p.script)
            if as_json:
                output.print_json({"dry_run": True, "scripts": [p.to_json() for p in previews]})
            return
        svc.prewarm(site)
        # resolve and render everything first: nothing is sent if any spec is bad
        prepared = [svc.prepare(s, site, overrides, after=after if i == 0 else None) for i, s in enumerate(specs)]
        jobs: list[Any] = []
        for i, p in enumerate(prepared):
            if i > 0:
                # a chain: this one starts after the previous one succeeded
                p = svc.prepare(specs[i], site, overrides, after=[jobs[-1].id], loaded_spec=p.loaded_spec)
            for w in p.resolved.warnings:
                output.note(f"warning: {w}")
            job = svc.submit(p)
            jobs.append(job)
            output.note(
                f"submitted {job.id} ({job.name}) to {job.site} as Slurm job {job.slurm_job_id}"
                if job.site != "local"
                else f"submitted {job.id} ({job.name}) to local as job {job.slurm_job_id}"
            )
            if job_id_file:
                _write_job_ids(job_id_file, jobs, len(prepared))
        if not wait:
            if as_json:
                output.print_json(output.jobs_json(jobs))
            else:
                for job in jobs:
                    sys.stdout.write(f"{job.id}\n")
            return
        from aifactory_cli.cli.waiting import wait_and_report

        code = wait_and_report(svc, jobs, seconds, follow, cancel_on_interrupt, as_json, junit)
        raise typer.Exit(code)


def _write_job_ids(path: Path, jobs: list[Any], total: int) -> None:
    """The ids so far, one per line; if that fails the jobs are already queued, so say which."""
    try:
        path.write_text("".join(f"{j.id}\n" for j in jobs))
    except OSError as exc:
        from aifactory_cli.errors import StoreError

        ids = " ".join(j.id for j in jobs)
        rest = f"; the other {total - len(jobs)} spec(s) of the chain were not submitted" if total > len(jobs) else ""
        raise StoreError(
            f"submitted {ids}, but could not write --job-id-file {path}: {exc.strerror or exc}{rest}",
            f"the job(s) are queued: follow them with `aifactory status {ids}`, or `aifactory cancel {ids}`",
        ) from exc
