"""`aifactory submit SPEC...`: resolve, render, stage and submit (or --dry-run)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import typer

from aifactory_cli.cli import completion, output
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
    prefer: str = typer.Option("start", "--prefer", help="With --site auto: pick the soonest `start` or the `cost`."),
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
    timeout: float | None = typer.Option(None, "--timeout", help="With --wait: give up after SECONDS (exit 5)."),
    job_id_file: Path | None = typer.Option(
        None, "--job-id-file", help="Write the submitted job ids (one per line) to this file."
    ),
    cancel_on_interrupt: bool = typer.Option(
        True, "--cancel-on-interrupt/--no-cancel-on-interrupt", help="With --wait: cancel the jobs on SIGINT/SIGTERM."
    ),
    junit: Path | None = typer.Option(None, "--junit", help="With --wait: write a JUnit XML report to PATH."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only on stdout."),
) -> None:
    from aifactory_cli.sites.resolve import Overrides

    # argument checks first: nothing is submitted if one of them fails
    for given, option in ((follow, "--follow"), (timeout is not None, "--timeout"), (junit is not None, "--junit")):
        if given and not wait:
            raise BadInput(f"{option} only applies with --wait", f"add --wait, or leave out {option}")
    output.check_timeout(timeout)
    site = output.site_option(site)
    site_names = output.site_list_option(sites)
    output.check_output_file(job_id_file, "--job-id-file")
    output.check_output_file(junit, "--junit", make_parents=True)
    overrides = Overrides(account=account, partition=partition, qos=qos)
    with output.service() as svc:
        if site == "auto":
            from aifactory_cli.errors import LimitError
            from aifactory_cli.service.broker import plan, rank, why

            rows = rank(plan(svc, str(specs[0]), site_names, overrides), prefer)
            if not rows or not rows[0].ok:
                reasons = "; ".join(f"{r.site}: {r.reason}" for r in rows)
                raise LimitError(f"no site can run this job: {reasons}", "see `aifactory plan SPEC`")
            output.note(why(rows[0], rows, prefer))
            site = rows[0].site
        if not dry_run:
            svc.prewarm(site)
        # resolve and render everything first: nothing is sent if any spec is bad
        prepared = [svc.prepare(s, site, overrides, after=after if i == 0 else None) for i, s in enumerate(specs)]
        if dry_run:
            from aifactory_cli.sites.billing import charge_json, estimate

            for p in prepared:
                for w in p.resolved.warnings:
                    output.note(f"warning: {w}")
                charge = estimate(p.resolved)
                if charge:
                    output.note(f"estimated charge on {p.resolved.site}: at most {charge}")
                if as_json:
                    continue
                if len(prepared) > 1:
                    sys.stdout.write(f"# ---- {p.loaded_spec.path} ----\n")
                sys.stdout.write(p.script)
            if as_json:
                output.print_json(
                    {
                        "dry_run": True,
                        "scripts": [
                            {
                                "spec": str(p.loaded_spec.path),
                                "site": p.resolved.site,
                                "resolved": p.resolved.summary(),
                                "charge": charge_json(estimate(p.resolved)),
                                "script": p.script,
                            }
                            for p in prepared
                        ],
                    }
                )
            return
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
        code = wait_and_report(svc, jobs, timeout, follow, cancel_on_interrupt, as_json, junit)
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


def wait_and_report(
    svc: Any,
    jobs: list[Any],
    timeout: float | None,
    follow: bool,
    cancel_on_interrupt: bool,
    as_json: bool,
    junit: Path | None = None,
) -> int:
    """Wait with state changes on stderr; cancel the jobs on SIGINT/SIGTERM if asked."""
    from aifactory_cli.service.session import exit_code_for

    def on_change(job: Any) -> None:
        extra = f" ({job.reason})" if job.reason else ""
        code = f" exit {job.exit_code}" if job.exit_code is not None and job.state in ("COMPLETED", "FAILED") else ""
        output.note(f"{job.id} {job.name}: {job.state}{code}{extra}")

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    from aifactory_cli.errors import WaitTimeout

    junit_error: Exception | None = None
    timed_out: WaitTimeout | None = None
    old = signal.signal(signal.SIGTERM, on_signal)
    try:
        if follow and len(jobs) == 1:
            for chunk in svc.follow(jobs[0].id):
                sys.stderr.write(chunk.decode(errors="replace"))
                sys.stderr.flush()
        svc.wait(jobs=jobs, timeout=timeout, on_change=on_change)
    except WaitTimeout as exc:
        timed_out = exc  # the states so far still go to stdout (JSON for CI), then exit 5
    except KeyboardInterrupt:
        if cancel_on_interrupt:
            output.note("interrupted: cancelling " + ", ".join(j.id for j in jobs if not j.is_final))
            svc.cancel([j.id for j in jobs])
        raise
    finally:
        signal.signal(signal.SIGTERM, old)
        if junit is not None:
            junit_error = _write_junit(svc, jobs, junit)
            if junit_error is not None and sys.exc_info()[1] is not None:
                output.note(f"error: {junit_error}")  # the exception in flight wins: say it here
    if as_json:
        output.print_json(output.jobs_json(jobs))
    else:
        output.jobs_table(jobs)
    if junit_error is not None:
        raise junit_error
    if timed_out is not None:
        raise timed_out
    return exit_code_for(jobs)


def _write_junit(svc: Any, jobs: list[Any], path: Path) -> Exception | None:
    """Write the report; on failure return the error, to raise once the results are shown."""
    from aifactory_cli.errors import StoreError
    from aifactory_cli.service.junit import write_junit

    try:
        write_junit(svc, jobs, path)
    except OSError as exc:
        return StoreError(
            f"could not write the JUnit report --junit {path}: {exc.strerror or exc}",
            "see the jobs with `aifactory status " + " ".join(j.id for j in jobs) + "`",
        )
    return None
