"""`aifactory exec JOB -- CMD...`: a command as a step inside a running job."""

from __future__ import annotations

import typer

from aifactory_cli.cli import completion, output


def register(app: typer.Typer) -> None:
    app.command(
        "exec",
        help="Run a command as a step inside a running job (srun --jobid --overlap), in the job dir with "
        "the job's modules and env; streams its output and exits with its exit code. "
        "Example: aifactory exec train -- nvidia-smi",
    )(exec_)


def exec_(
    job: str = typer.Argument(..., metavar="JOB", autocompletion=completion.jobs),
    command: list[str] = typer.Argument(..., metavar="-- CMD...", help="The command and its arguments, after --."),
    node: str | None = typer.Option(
        None, "--node", "-n", help="The node: an index from 0 in the job's node list, or a name (default: 0)."
    ),
    all_nodes: bool = typer.Option(
        False, "--all-nodes", help="Once on every node of the job; lines start with the node's name."
    ),
    no_wait: bool = typer.Option(False, "--no-wait", help="Refuse (exit 4) instead of waiting for a pending job."),
) -> None:
    with output.service() as svc:
        rc = svc.execute(job, list(command), node=node, all_nodes=all_nodes, wait=not no_wait)
    raise typer.Exit(rc)
