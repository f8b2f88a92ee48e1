"""`aifactory wait JOB...`: block until the jobs end."""

from __future__ import annotations

import typer

from aifactory_cli.cli import completion, options, output


def register(app: typer.Typer) -> None:
    app.command(
        "wait",
        help="Block until the jobs end. Exit 0 if all COMPLETED, 1 otherwise, 5 on --timeout, "
        "130 on Ctrl-C (the jobs run on unless --cancel-on-interrupt).",
    )(wait)


def wait(
    jobs: list[str] = typer.Argument(..., metavar="JOB...", autocompletion=completion.jobs),
    timeout: str | None = options.timeout_option("Give up after DURATION (exit 5)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    junit: str | None = typer.Option(None, "--junit", help="Also write a JUnit XML report to PATH."),
    cancel_on_interrupt: bool = typer.Option(
        False,
        "--cancel-on-interrupt/--no-cancel-on-interrupt",
        help="On Ctrl-C or SIGTERM: cancel the jobs and report their final states (default: stop watching; "
        "they run on). Exit 130 (143 on SIGTERM).",
    ),
) -> None:
    from aifactory_cli.cli.waiting import wait_and_report

    seconds = options.parse_timeout(timeout)
    report = options.check_output_file(junit, "--junit", make_parents=True)
    with output.service() as svc:
        found = svc.jobs(jobs)
        code = wait_and_report(svc, found, seconds, False, cancel_on_interrupt, as_json, report)
        raise typer.Exit(code)
