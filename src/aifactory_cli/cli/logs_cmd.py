"""`aifactory logs JOB`: the job's output."""

from __future__ import annotations

import sys

import typer

from aifactory_cli.cli import completion, output


def register(app: typer.Typer) -> None:
    app.command("logs", help="Print the job's stdout (or --stderr); --follow streams until the job ends.")(logs)


def logs(
    job: str = typer.Argument(..., metavar="JOB", autocompletion=completion.jobs),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until the job ends."),
    stderr: bool = typer.Option(False, "--stderr", "-e", help="Show stderr instead of stdout."),
    task: str | None = typer.Option(
        None, "--task", "-t", help="Sweeps: the element, by index (3) or values (LR=0.1); default 0."
    ),
) -> None:
    with output.service() as svc:
        if follow:
            for chunk in svc.follow(job, stderr=stderr, task=task):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            return
        found, data = svc.logs(job, stderr=stderr, task=task)
        sys.stdout.buffer.write(data)
        if not data:  # say why nothing is shown (stderr: stdout stays the log itself)
            stream = "stderr" if stderr else "stdout"
            if found.state in ("PREPARED", "PENDING"):
                output.note(f"{found.id} has not started yet ({found.state}): no {stream} so far")
            else:
                output.note(f"{found.id} ({found.state}): its {stream} is empty")
