"""Failed jobs and sweep elements shown where the user looks: after the final table of `wait` and
`submit --wait`, and in `status`: which job or element, its values, its exit code, its stderr's end."""

from __future__ import annotations

from typing import Any

from aifactory_cli.cli import output


def report(svc: Any, jobs: list[Any]) -> None:
    from aifactory_cli.service import failures

    shown, more = failures.collect(svc, jobs)
    for f in shown:
        who = f"{f.job.id} {f.job.name}" + (f" {f.what}" if f.what else "")
        code = f" exit {f.exit_code}" if f.exit_code is not None else ""
        reason = f" ({f.reason})" if f.reason else ""
        output.note(f"\n{who}: {f.state}{code}{reason}")
        where = f" ({f.stderr_path})" if f.stderr_path else ""
        if f.stderr_tail.strip():
            output.note(f"  stderr, last lines{where}:")
            for line in f.stderr_tail.splitlines():
                output.note(f"  | {line}")
        else:
            output.note(f"  stderr is empty{where}")
        hint = f" --task {f.task}" if f.task is not None else ""
        output.note(f"  full log: aifactory logs {f.job.id}{hint} --stderr")
    if more:
        output.note(f"\n... and {more} more failed element(s): aifactory status {shown[0].job.id} --json lists them")
    if shown:
        job = shown[0].job
        if job.array_size and len({f.job.id for f in shown}) == 1:
            output.note(f"rerun the failed elements: aifactory rerun {job.id} --failed")
