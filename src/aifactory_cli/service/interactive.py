"""`aifactory exec` and `aifactory shell`: a command, or a login shell on a pseudo-terminal, as a step
inside a running job's allocation, on one of its nodes (or on each: `exec --all-nodes`).

The pipeline: the job (by reference) -> its state, asked of the site now (a PENDING job is waited
for, with a line on stderr, unless --no-wait; an ended one is refused) -> its nodes (squeue) ->
the node asked for -> the step's preamble (the job dir, the job's modules and environment from the
site's template, as the batch script has them) -> the step (`srun --jobid --overlap`, on the
site's existing connection: through the connection agent when the site uses one) -> its exit code.
On the `local` site the command is a process of this machine in the job dir, with the environment
the local runner gave the job.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aifactory_cli import states
from aifactory_cli.errors import AifactoryError, BadInput, RemoteError
from aifactory_cli.jobs import jobdir
from aifactory_cli.jobs.model import Job
from aifactory_cli.service.running import JobNotRunning, wait_running

if TYPE_CHECKING:
    from aifactory_cli.backends.local import LocalBackend
    from aifactory_cli.backends.slurm import SlurmBackend
    from aifactory_cli.service.session import Service
    from aifactory_cli.transport.interactive import Session

Write = Callable[[bytes], object]


@dataclass
class Streams:
    """Where a step's output goes, and whether this process has a terminal (stdin, stdout)."""

    stdout: Write
    stderr: Write
    stdin_fd: int | None = None  # fed to the command (exec: only when not a terminal)
    tty: bool = False  # stdin is a terminal (shell requires one)


def default_streams() -> Streams:
    def write(stream: object) -> Write:
        def put(data: bytes) -> None:
            buffer = stream.buffer  # type: ignore[attr-defined]
            buffer.write(data)
            buffer.flush()

        return put

    tty = os.isatty(0)
    return Streams(write(sys.stdout), write(sys.stderr), None if tty else 0, tty)


# --- the job, running --------------------------------------------------------------------------------


def pick_nodes(job: Job, nodes: list[str], node: str | None, all_nodes: bool) -> list[str]:
    """The step's nodes: all of them, the one asked for (an index from 0 or a name), or the first."""
    if all_nodes and node is not None:
        raise BadInput("--node and --all-nodes choose the nodes two ways", "give one of them")
    if not nodes:
        raise RemoteError(f"Slurm lists no nodes for job {job.id} ({job.site} job {job.slurm_job_id})")
    if all_nodes:
        return nodes
    if node is None:
        return nodes[:1]
    if node in nodes:
        return [node]
    if node.isdigit() and int(node) < len(nodes):
        return [nodes[int(node)]]
    listed = ", ".join(f"{i}={n}" for i, n in enumerate(nodes))
    raise BadInput(
        f"job {job.id} has no node {node!r}: its {len(nodes)} node(s) are {listed}",
        "give --node an index from 0 or one of those names",
    )


# --- the step's preamble -------------------------------------------------------------------------------


def preamble(svc: Service, job: Job) -> str:
    """Shell text run first in the step: the job dir and ids, the job's modules and environment
    (the batch script's own blocks, rendered again from the job's recorded spec), then `"$@"`."""
    port = jobdir.AIF_PORT  # exec and shell refuse sweeps: never an element's aif_port.N
    lines = [
        "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in _ids(job).items()),
        'cd "$AIF_JOB_DIR" || exit 1',
        # the job's AIF_HOST and AIF_PORT, as its tasks see them (recorded when the batch script started)
        f"if [ -r {port} ]; then read -r AIF_HOST AIF_PORT < {port}; export AIF_HOST AIF_PORT; fi",
        _job_blocks(svc, job),
        'exec "$@"',
    ]
    return "\n".join(line for line in lines if line.strip()) + "\n"


def _ids(job: Job) -> dict[str, str]:
    return {"AIF_JOB_DIR": job.workdir or ".", "AIF_JOB_ID": job.id, "AIF_JOB_TOKEN": job.token, "AIF_SITE": job.site}


def _job_blocks(svc: Service, job: Job) -> str:
    if not job.spec_json:
        svc.notify(f"note: job {job.id} has no recorded spec: the step gets the site's environment only")
        return ""
    try:
        from pathlib import Path

        from aifactory_cli.settings import current
        from aifactory_cli.sites.render import step_environment
        from aifactory_cli.sites.resolve import Overrides, resolve
        from aifactory_cli.spec.model import load_spec_text

        path = Path(job.spec_path) if job.spec_path else None
        loaded = load_spec_text(json.dumps(json.loads(job.spec_json)), source=f"the spec of job {job.id}", path=path)
        spec = loaded.for_site(job.site)
        profile = svc.profile(job.site)
        if profile.profile.scheduler == "local" and spec.resources.gpus_per_node != 0:
            from aifactory_cli.backends.local import with_machine_gpus

            profile = with_machine_gpus(profile)
        extra = job.extra
        overrides = Overrides(account=extra.get("account"), partition=extra.get("partition"), qos=extra.get("qos"))
        resolved = resolve(spec, profile, svc.config, overrides, current())
        return step_environment(resolved, job.token, job.id)
    except AifactoryError as exc:
        svc.notify(f"warning: the job's modules and env: could not render them again ({exc.message}); left out")
        return ""


# --- exec and shell --------------------------------------------------------------------------------------


@dataclass
class Target:
    job: Job
    nodes: list[str]
    slurm: SlurmBackend | None  # None: the local site


def target(svc: Service, ref: str, *, node: str | None, all_nodes: bool, wait: bool, what: str) -> Target:
    """The running job `ref` means and the step's nodes. A job the store has as RUNNING costs one
    squeue (state and nodes at once); otherwise the site is asked for the job's state first (the
    store learns that it started), and a pending one is waited for."""
    job = svc.store.find(ref)
    if job.array_size:
        raise BadInput(
            f"job {job.id} ({job.name}) is a sweep of {job.array_size} elements: {what} runs in one job",
            "run it in a job of one element (`aifactory rerun JOB --task N` submits one)",
        )
    if svc.profile(job.site).profile.scheduler == "local":
        job = wait_running(svc, job, wait=wait, what=f"{what} in")
        return Target(job, pick_nodes(job, ["localhost"], node, all_nodes), None)
    from aifactory_cli.backends.slurm import SlurmBackend

    backend = svc.backend(job.site)
    assert isinstance(backend, SlurmBackend)
    found = backend.job_nodes(job) if job.state == states.RUNNING and job.slurm_job_id else None
    if found is None or found.state != states.RUNNING:
        job = wait_running(svc, job, wait=wait, what=f"{what} in")
        found = backend.job_nodes(job)
    if found is None or found.state in states.FINAL_STATES:
        state = found.raw_state if found else "no longer in squeue"
        raise JobNotRunning(f"job {job.id} ({job.name}) has ended ({state}): there is nothing to {what} in")
    return Target(job, pick_nodes(job, found.nodes, node, all_nodes), backend)


def execute(
    svc: Service,
    ref: str,
    argv: list[str],
    *,
    node: str | None = None,
    all_nodes: bool = False,
    wait: bool = True,
    streams: Streams | None = None,
) -> int:
    """Run `argv` as a step inside the running job; returns its exit code (with --all-nodes, the
    highest of the nodes', as srun gives it; output lines then start with the node's name)."""
    if not argv:
        raise BadInput("no command to run", "put it after --: aifactory exec JOB -- hostname")
    streams = streams or default_streams()
    found = target(svc, ref, node=node, all_nodes=all_nodes, wait=wait, what="exec")
    job, nodes, backend = found.job, found.nodes, found.slurm
    text = preamble(svc, job)
    if backend is None:
        return _local(svc, job).run_step(job, text, argv)
    from aifactory_cli.scheduler.steps import LineLabeller
    from aifactory_cli.transport.interactive import relay

    out, err = streams.stdout, streams.stderr
    labels = [LineLabeller(nodes, out), LineLabeller(nodes, err)] if len(nodes) > 1 else []
    if labels:
        out, err = labels[0].feed, labels[1].feed
    name = step_name()
    session = backend.open_step(job, text, argv, nodes, name)
    try:
        rc = relay(session, stdout=out, stderr=err, stdin_fd=streams.stdin_fd)
    except BaseException:
        _stop_step(backend, job, name, session)
        raise
    finally:
        session.close()
        for labeller in labels:
            labeller.flush()
    return rc


def _local(svc: Service, job: Job) -> LocalBackend:
    from aifactory_cli.backends.local import LocalBackend

    backend = svc.backend(job.site)
    assert isinstance(backend, LocalBackend)
    return backend


def step_name() -> str:
    """A name no other step has: the step can be found and cancelled by it."""
    import secrets

    return f"aif-exec-{secrets.token_hex(4)}"


def _stop_step(backend: SlurmBackend, job: Job, name: str, session: Session) -> None:
    """Interrupted (Ctrl-C) or the link failed: the step must not keep running unseen."""
    session.close()
    with contextlib.suppress(Exception):
        backend.cancel_step(job, name)


def shell(svc: Service, ref: str, *, node: str | None = None, wait: bool = True, streams: Streams | None = None) -> int:
    """An interactive login shell on a pty inside the running job, on its first (or chosen) node,
    with the job's environment; returns the shell's exit status."""
    streams = streams or default_streams()
    if not streams.tty:
        raise BadInput(
            "aifactory shell needs a terminal on stdin (it is a pipe or a file here)",
            "run it from a terminal, or run single commands with `aifactory exec JOB -- CMD`",
        )
    found = target(svc, ref, node=node, all_nodes=False, wait=wait, what="open a shell")
    job, nodes, backend = found.job, found.nodes, found.slurm
    from aifactory_cli.scheduler.steps import shell_argv

    text = preamble(svc, job)
    if backend is None:
        return _local(svc, job).run_step(job, text, shell_argv())
    from aifactory_cli.transport.interactive import pty_request, raw_terminal, relay

    svc.notify(f"shell in job {job.id} ({job.site} job {job.slurm_job_id}) on {nodes[0]}; `exit` leaves it")
    name = step_name()
    session = backend.open_step(job, text, shell_argv(), nodes, name, pty=pty_request(0))
    try:
        with raw_terminal(0):
            return relay(session, stdout=streams.stdout, stderr=streams.stderr, stdin_fd=0, winch_fd=0)
    except BaseException:
        _stop_step(backend, job, name, session)
        raise
    finally:
        session.close()
