"""The `aifactory` command line: one module per command, one error boundary (`main`)."""

from __future__ import annotations

import sys

import typer

from aifactory_cli import __version__
from aifactory_cli.cli import (
    cancel_cmd,
    data_cmd,
    exec_cmd,
    fetch_cmd,
    forward_cmd,
    list_cmd,
    logs_cmd,
    plan_cmd,
    render_cmd,
    rerun_cmd,
    schema_cmd,
    shell_cmd,
    sites_cmd,
    status_cmd,
    submit_cmd,
    sync_cmd,
    usage_cmd,
    wait_cmd,
)
from aifactory_cli.cli.boundary import STATE

app = typer.Typer(
    name="aifactory",
    help="Run one portable job file on the EuroHPC supercomputers (LUMI, JUPITER, ...) or on this "
    "machine. Exit codes: 0 ok, 1 job failed, 2 bad input, 3 connection/remote, 4 not found, "
    "5 timeout, 130 interrupted (143 on SIGTERM while waiting), 70 internal error.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"aifactory {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", help="Show tracebacks and remote details on errors (also after the command)."
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    STATE.debug = debug


for module in (
    submit_cmd,
    render_cmd,
    status_cmd,
    list_cmd,
    logs_cmd,
    wait_cmd,
    cancel_cmd,
    fetch_cmd,
    forward_cmd,
    rerun_cmd,
    sync_cmd,
    plan_cmd,
    usage_cmd,
    schema_cmd,
    exec_cmd,
    shell_cmd,
):
    module.register(app)
app.add_typer(sites_cmd.app, name="sites")
app.add_typer(data_cmd.app, name="data")


def hoist_debug(args: list[str]) -> list[str]:
    """`--debug` after the subcommand (`aifactory status --debug`) moved first, where the root command
    and the error boundary read it; arguments after a `--` are left alone."""
    end = args.index("--") if "--" in args else len(args)
    head = [a for a in args[:end] if a != "--debug"]
    if len(head) == end:
        return args
    return ["--debug", *head, *args[end:]]


def main() -> None:
    import os

    from aifactory_cli.cli.boundary import run_app

    os.umask(0o077)  # state, caches, manifests and local job files are the user's alone

    sys.exit(run_app(app, hoist_debug(sys.argv[1:])))
