"""Waiting for jobs, as `submit --wait` and `wait` report it: state changes on stderr, the final
states as a table or JSON on stdout, a JUnit report if asked, and the contract's exit code.

Ctrl-C (SIGINT) or SIGTERM while waiting either *detaches* (stops watching; the jobs keep their place
and run on) or *cancels* (scancel, then a short wait so that the JSON and the JUnit report show the
final states the site reports). `interrupt_action` decides which."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aifactory_cli.cli import output

CANCEL = "cancel"
DETACH = "detach"
# 130 is the contract's "interrupted" (128 + SIGINT); SIGTERM gives 128 + 15, as the shell reports a
# process that SIGTERM ended (an extension: the contract names no code for it)
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
# after a cancel: how long the site gets to report the jobs' final states (a bounded wait)
SETTLE_SECONDS = 10.0

# CI systems that set no CI=true of their own (most do); any of them means "no person is watching"
CI_VARIABLES = (
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "JENKINS_URL",
    "BUILDKITE",
    "CIRCLECI",
    "TF_BUILD",
    "TEAMCITY_VERSION",
    "TRAVIS",
    "BITBUCKET_BUILD_NUMBER",
    "AIFACTORY_NONINTERACTIVE",
)


def ci_variable(environ: Mapping[str, str]) -> str | None:
    """The environment variable that says this runs under CI, or None (CI=false/0/no does not count)."""
    if environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return "CI"
    return next((name for name in CI_VARIABLES if environ.get(name, "").strip()), None)


def at_terminal(environ: Mapping[str, str], stdin_tty: bool, stderr_tty: bool) -> bool:
    """A person at a terminal: stdin and stderr are terminals, and no CI variable is set."""
    return stdin_tty and stderr_tty and ci_variable(environ) is None


def interrupt_action(signum: int, flag: bool | None, terminal: bool) -> str:
    """CANCEL or DETACH for a signal while waiting. `flag`: --cancel-on-interrupt (True), --no-cancel-
    on-interrupt (False) or neither (None, auto: Ctrl-C at a terminal detaches; without a terminal, under
    CI, or on SIGTERM it cancels, as sbatch-based CI expects)."""
    if flag is not None:
        return CANCEL if flag else DETACH
    return DETACH if signum == signal.SIGINT and terminal else CANCEL


def exit_code_for_signal(signum: int) -> int:
    return EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED


class _Stop(KeyboardInterrupt):
    """A signal while waiting (a KeyboardInterrupt, so that the error boundary knows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


WATCHING, SENDING, SETTLING = "watching", "sending", "settling"


class _Signals:
    """SIGINT and SIGTERM handlers for the whole wait. The first signal stops the watch. While the
    cancel is sent and its final states awaited, a second one is only noted (a habitual double Ctrl-C
    must neither stop the cancel half-way nor cut the report of the final states short) and a third
    stops what runs; at any other time a further signal stops what runs."""

    def __init__(self) -> None:
        self.phase = WATCHING
        self.first: int | None = None
        self.extra = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._old[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._old.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.first is None:
            self.first = signum
            raise _Stop(signum)
        self.extra += 1
        if self.phase == SENDING and self.extra == 1:
            output.note("still sending the cancel: press Ctrl-C again to stop without waiting for it")
            return
        if self.phase == SETTLING and self.extra == 1:
            output.note(
                f"cancel sent; waiting (at most {SETTLE_SECONDS:.0f} s) for the site to report the final states: "
                "press Ctrl-C again to stop waiting"
            )
            return
        raise _Stop(signum)


def wait_and_report(
    svc: Any,
    jobs: list[Any],
    timeout: float | None,
    follow: bool,
    cancel_on_interrupt: bool | None,
    as_json: bool,
    junit: Path | None = None,
) -> int:
    """Wait with state changes on stderr; on SIGINT/SIGTERM detach or cancel (see `interrupt_action`)."""
    from aifactory_cli.errors import WaitTimeout
    from aifactory_cli.service.session import exit_code_for

    def on_change(job: Any) -> None:
        extra = f" ({job.reason})" if job.reason else ""
        code = f" exit {job.exit_code}" if job.exit_code is not None and job.state in ("COMPLETED", "FAILED") else ""
        output.note(f"{job.id} {job.name}: {job.state}{code}{extra}")

    junit_error: Exception | None = None
    timed_out: WaitTimeout | None = None
    stopped: int | None = None
    with _Signals() as signals:
        try:
            try:
                if follow and len(jobs) == 1:
                    _follow(svc, jobs[0].id)
                svc.wait(jobs=jobs, timeout=timeout, on_change=on_change)
            except WaitTimeout as exc:
                timed_out = exc  # the states so far still go to stdout (JSON for CI), then exit 5
            except _Stop as stop:
                stopped = stop.signum
                _after_signal(svc, jobs, stop.signum, cancel_on_interrupt, signals, on_change)
        finally:
            if junit is not None:
                junit_error = _write_junit(svc, jobs, junit)
                if junit_error is not None and (sys.exc_info()[1] is not None or stopped is not None):
                    output.note(f"error: {junit_error}")  # the exception in flight (or the signal) wins
        if as_json:
            output.print_json(output.jobs_json(jobs))
        else:
            output.jobs_table(jobs)
        if stopped is None:  # what failed, on stderr (so also in a CI log next to --json's stdout)
            from aifactory_cli.cli import failures

            failures.report(svc, jobs)
    if stopped is not None:
        return exit_code_for_signal(stopped)
    if junit_error is not None:
        raise junit_error
    if timed_out is not None:
        raise timed_out
    return exit_code_for(jobs)


def _after_signal(svc: Any, jobs: list[Any], signum: int, flag: bool | None, signals: _Signals, on_change: Any) -> None:
    """Detach or cancel the jobs that have not ended; after a cancel, wait (bounded) for their final states."""
    from aifactory_cli.errors import AifactoryError, WaitTimeout

    what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
    live = [j for j in jobs if not j.is_final]
    if not live:
        output.note(f"{what}: every job had already ended")
        return
    ids = [j.id for j in live]
    terminal = at_terminal(os.environ, output.is_tty(sys.stdin), output.is_tty(sys.stderr))
    if interrupt_action(signum, flag, terminal) == DETACH:
        states = ", ".join(f"{j.id} ({j.state})" for j in live)
        output.note(f"{what}: stopped watching; not cancelled, still on the site: {states}")
        output.note(f"  re-attach: aifactory wait {shlex.join(ids)}")
        output.note(f"  cancel:    aifactory cancel {shlex.join(ids)}")
        if flag is None:
            output.note("  (to have Ctrl-C cancel them instead: --cancel-on-interrupt)")
        return
    output.note(f"{what}: cancelling {', '.join(ids)}")
    signals.phase = SENDING
    try:
        svc.cancel(ids)
        signals.phase = SETTLING
        svc.wait(jobs=jobs, timeout=SETTLE_SECONDS, on_change=on_change, min_interval=0.5, max_interval=1.0)
    except _Stop:
        if signals.phase == SENDING:
            output.note(
                f"stopped before the site confirmed the cancel: check with `aifactory status {shlex.join(ids)}`"
            )
        else:
            output.note(f"stopped waiting for the final states: see them with `aifactory status {shlex.join(ids)}`")
    except WaitTimeout:
        left = " ".join(j.id for j in jobs if not j.is_final)
        output.note(f"cancel sent; the site did not report the end of {left} within {SETTLE_SECONDS:.0f} s")
        output.note(f"  see the final states with `aifactory status {left}`")
    except AifactoryError as exc:
        where = f"{exc.where}: " if exc.where else ""
        phase = "cancel" if signals.phase == SENDING else "wait for the final states"
        output.note(f"error: could not {phase}: {where}{exc.message}")
        output.note(f"  the job(s) may still run: see `aifactory status {shlex.join(ids)}`")
        output.note(f"  cancel:    aifactory cancel {shlex.join(ids)}")


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
