"""`aifactory forward JOB [REMOTE_PORT] [--local-port L]`: 127.0.0.1:L -> the job's node:port."""

from __future__ import annotations

import signal
import sys
from typing import Any

import typer

from aifactory_cli.cli import completion, output


def register(app: typer.Typer) -> None:
    app.command(
        "forward",
        help="Forward 127.0.0.1:L on this machine to the running job's first node, port REMOTE_PORT "
        "(default: the job's AIF_PORT), over the site's existing connection, until Ctrl-C. Prints the "
        "URL (with the server's token when its log shows one, e.g. Jupyter). Waits while the job is pending.",
    )(forward)


def forward(
    job: str = typer.Argument(..., metavar="JOB", autocompletion=completion.jobs),
    remote_port: int | None = typer.Argument(
        None, metavar="[REMOTE_PORT]", help="The port on the job's node (default: its AIF_PORT)."
    ),
    local_port: int | None = typer.Option(
        None, "--local-port", "-l", help="The port here (default: REMOTE_PORT's number if free, else a free one)."
    ),
    no_wait: bool = typer.Option(False, "--no-wait", help="Refuse (exit 4) instead of waiting for a pending job."),
    task: int | None = typer.Option(None, "--task", "-t", help="Sweeps: the element whose port (default 0)."),
    node: str | None = typer.Option(
        None, "--node", "-n", help="The job's node to reach: an index from 0 or a name (default: the first)."
    ),
) -> None:
    from aifactory_cli.service import forward as fw

    def on_wait(j: Any) -> None:
        why = f": {j.reason}" if j.reason else ""
        output.note(f"waiting for job {j.id} ({j.name}) to start ({j.state}{why}); Ctrl-C to stop waiting")

    with output.service() as svc:
        target = fw.find_target(svc, job, remote_port, wait=not no_wait, task=task, on_wait=on_wait, node=node)
        what = "its AIF_PORT" if target.port == target.recorded_port else "REMOTE_PORT"
        tokens = fw.TokenWatch(svc, target)
        if target.local_site and local_port is None:
            _say(f"http://127.0.0.1:{target.port}", tokens.look())
            output.note(
                f"job {target.job.id} runs on this machine: 127.0.0.1:{target.port} ({what}) is reachable as it "
                "is, nothing to forward (--local-port L relays it to another port)"
            )
            return
        listener, note = fw.listen(local_port, target.port)
        if note:
            output.note(note)
        base = f"http://127.0.0.1:{listener.getsockname()[1]}"
        transport = svc.backend(target.job.site).transport
        forwarder = fw.Forwarder(transport, target.host, target.port, listener, output.note)
        watch = fw.watch_job(svc, target)
        token = tokens.look()
        _say(base, token)
        output.note(
            f"forwarding {base[7:]} -> {target.host}:{target.port} ({what} of job {target.job.id} on "
            f"{target.job.site}); Ctrl-C to stop"
        )

        ticks = [0]

        def tick() -> None:  # every second: the job every WATCH_EVERY s, its log for a token meanwhile
            ticks[0] += 1
            if ticks[0] % int(fw.WATCH_EVERY) == 0:
                watch()
            elif ticks[0] > fw.TOKEN_EAGER:
                return  # after the first minutes, the token is looked for with the job only
            if not tokens.found and tokens.look():
                _say(base, tokens.found)
                output.note("the server's log shows a token: open the URL above")

        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            forwarder.serve(tick, every=1.0)
        except KeyboardInterrupt:
            output.note(f"forward stopped ({forwarder.connections} connection(s) forwarded)")
        finally:
            forwarder.stop()
            signal.signal(signal.SIGTERM, previous)


def _say(base: str, token_path: str | None) -> None:
    """The URL on stdout (a script reads it there); with the token's path and query when known."""
    sys.stdout.write(f"{base}{token_path or '/'}\n")
    sys.stdout.flush()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
