"""`aifactory shell JOB`: an interactive shell inside a running job."""

from __future__ import annotations

import typer

from aifactory_cli.cli import completion, output


def register(app: typer.Typer) -> None:
    app.command(
        "shell",
        help="An interactive shell on a node of a running job (srun --jobid --overlap --pty), in the job "
        "dir with the job's modules and env; exits with the shell's exit status. Needs a terminal.",
    )(shell)


def shell(
    job: str = typer.Argument(..., metavar="JOB", autocompletion=completion.jobs),
    node: str | None = typer.Option(
        None, "--node", "-n", help="The node: an index from 0 in the job's node list, or a name (default: 0)."
    ),
    no_wait: bool = typer.Option(False, "--no-wait", help="Refuse (exit 4) instead of waiting for a pending job."),
) -> None:
    with output.service() as svc:
        rc = svc.shell(job, node=node, wait=not no_wait)
    raise typer.Exit(rc)
