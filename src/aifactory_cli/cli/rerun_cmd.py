"""`aifactory rerun JOB [--failed] [--task N...]`: submit again what failed."""

from __future__ import annotations

import sys

import typer

from aifactory_cli.cli import completion, output


def register(app: typer.Typer) -> None:
    app.command(
        "rerun",
        help="Submit a job again with the spec it was submitted with (same site, account, partition): "
        "the whole job, only its failed sweep elements (--failed), or the elements named with --task. "
        "Example: aifactory rerun sweep --failed",
    )(rerun)


def rerun(
    job: str = typer.Argument(..., metavar="JOB", autocompletion=completion.jobs),
    failed: bool = typer.Option(False, "--failed", help="Only what failed: a sweep's failed elements."),
    task: list[str] = typer.Option(
        [], "--task", "-t", help="Sweeps: these elements, by index (3), range (0-2) or values (LR=0.1)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be submitted; submit nothing."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the new job to end; exit code as `wait`."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    from aifactory_cli.service import elements
    from aifactory_cli.service import rerun as reruns

    with output.service() as svc:
        plan = reruns.plan(svc, job, failed=failed, tasks=task or None)
        original = plan.original
        what = (
            ", ".join(elements.describe(original, i) for i in plan.tasks)
            if plan.tasks is not None
            else ("the whole sweep" if original.array_size else "the job")
        )
        for w in plan.prepared.resolved.warnings:
            output.note(f"warning: {w}")
        if dry_run:
            output.note(f"would rerun {original.id} ({original.name}) on {original.site}: {what}")
            if as_json:
                output.print_json(
                    {"dry_run": True, "rerun_of": original.id, "elements": plan.tasks, "script": plan.prepared.script}
                )
            else:
                sys.stdout.write(plan.prepared.script)
            return
        new = reruns.submit(svc, plan)
        output.note(
            f"submitted {new.id} ({new.name}) to {new.site} as {'job' if new.site == 'local' else 'Slurm job'} "
            f"{new.slurm_job_id}: rerun of {original.id}, {what}"
        )
        if not wait:
            if as_json:
                output.print_json(output.jobs_json([new]))
            else:
                sys.stdout.write(f"{new.id}\n")
            return
        from aifactory_cli.cli.waiting import wait_and_report

        raise typer.Exit(wait_and_report(svc, [new], None, False, None, as_json, None))
