"""Waiting for jobs, as `submit --wait` and `wait` report it: state changes on stderr, the final
states as a table or JSON on stdout, a JUnit report if asked, and the contract's exit code."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

from aifactory_cli.cli import output


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
            _follow(svc, jobs[0].id)
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
        from aifactory_cli.cli import failures

        failures.report(svc, jobs)
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


def _follow(svc: Any, job_id: str) -> None:
    """Stream the job's stdout and stderr to stderr as they grow; stderr lines marked `stderr| `
    (red on a terminal), so a traceback shows where the output is."""
    import os

    plain = not output.is_tty(sys.stderr) or "NO_COLOR" in os.environ
    mark = "stderr| " if plain else "\x1b[31mstderr|\x1b[0m "
    pending = {"stdout": "", "stderr": ""}
    for stream, chunk in svc.follow_both(job_id):
        text = pending[stream] + chunk.decode(errors="replace")
        lines = text.split("\n")
        pending[stream] = lines.pop()  # a line not yet ended waits for its end
        for line in lines:
            sys.stderr.write((mark if stream == "stderr" else "") + line + "\n")
        sys.stderr.flush()
    for stream, rest in pending.items():
        if rest:
            sys.stderr.write((mark if stream == "stderr" else "") + rest + "\n")
    sys.stderr.flush()
