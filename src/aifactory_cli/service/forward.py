"""`aifactory forward JOB [REMOTE_PORT]`: 127.0.0.1:L on this machine -> the job's node:port, over
the site's existing connection.

- Where: the job dir's `aif_port` ("HOST PORT", written by the batch script when it starts: the
  job's first node and its AIF_PORT). REMOTE_PORT replaces the port, never the node.
- How: each accepted connection gets a tunnel from the site's transport (`Transport.open_tunnel`):
  a direct-tcpip channel of the one SSH connection (through a jump host too), or a stream through
  the connection agent's one login; never a login per connection. Bytes are pumped by
  `transport/relay.py`, one thread per connection.
- The local site: the job runs on this machine, its server is already at 127.0.0.1:PORT; a relay
  runs only when another local port is asked for.
- While forwarding, the job is polled (at most every poll_interval of its site): when it ends,
  the forward stops and says so. A Jupyter-style token in the job's logs (`?token=...`) is found
  and the full URL printed, so the user clicks once.
"""

from __future__ import annotations

import contextlib
import errno
import posixpath
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aifactory_cli import states
from aifactory_cli.errors import BadInput, NotFound, RemoteError
from aifactory_cli.jobs import jobdir
from aifactory_cli.jobs.model import Job
from aifactory_cli.service.running import JobNotRunning, wait_running

if TYPE_CHECKING:
    from aifactory_cli.service.session import Service
    from aifactory_cli.transport import Transport

PORT_WAIT_NOTE = 10.0  # seconds a running job may take to record its AIF_PORT before we say we wait
WATCH_EVERY = 5.0  # seconds between two looks at the job's state while forwarding
TOKEN_EAGER = 120  # seconds at first during which the job's log is read every second for a token
_TOKEN_URL = re.compile(r"https?://[^\s/?#\"'<>]+(/[^\s\"'<>]*?[?&]token=[A-Za-z0-9_-]+)")


@dataclass
class Target:
    job: Job
    host: str  # as the site's login node reaches it (the local site: 127.0.0.1)
    port: int
    recorded_port: int  # the job's AIF_PORT
    local_site: bool
    task: int | None = None  # a sweep's element (its own node, port and logs)


def _site_is_local(svc: Service, job: Job) -> bool:
    return svc.profile(job.site).profile.scheduler == "local"


def find_target(
    svc: Service,
    ref: str,
    remote_port: int | None = None,
    *,
    wait: bool = True,
    task: int | None = None,
    on_wait: Callable[[Job], None] | None = None,
    poll: float | None = None,
    node: str | None = None,
) -> Target:
    """Where to forward to: the running job's first node (or `node`: an index from 0 or a name, as
    `exec --node`) and its AIF_PORT (or `remote_port`). Every task of the job sees the same AIF_PORT,
    so a server each node starts on it is reached by `--node` alone."""
    if remote_port is not None and not 0 < remote_port < 65536:
        raise BadInput(f"REMOTE_PORT {remote_port} is not a TCP port", "give a number from 1 to 65535")
    job = wait_running(svc, svc.store.find(ref), wait=wait, what="forward to", on_wait=on_wait, poll=poll)
    if node is not None and (job.array_size or task is not None):
        raise BadInput(
            f"job {job.id} is a sweep: each element runs on its own node, and --node does not choose among them",
            "choose the element with --task N instead",
        )
    if job.array_size and task is None:
        task = 0
    if task is not None and not 0 <= task < max(job.array_size, 1):
        raise BadInput(
            f"job {job.id} has no element {task}",
            f"its elements are 0-{job.array_size - 1}" if job.array_size else "it is not a sweep: leave --task out",
        )
    if job.script is not None and jobdir.AIF_PORT not in job.script:
        raise NotFound(
            f"job {job.id} was submitted by an aifactory that did not record AIF_PORT",
            "resubmit it with this version (`aifactory rerun`) to forward to it",
        )
    name = jobdir.aif_port_name(task if job.array_size else None)
    transport = svc.backend(job.site).transport
    started = time.monotonic()
    said = False
    while True:
        found = _read_port(transport, posixpath.join(job.workdir or ".", name))
        if found is not None:
            host, port = found
            if node is not None:
                host = _node_host(svc, job, node, host)
            element = task if job.array_size else None
            return Target(job, host, remote_port or port, port, _site_is_local(svc, job), element)
        if not wait:
            raise NotFound(
                f"job {job.id} runs but has not recorded its AIF_PORT yet ({name} in its job dir)",
                "its setup may still run: try again in a moment, or leave out --no-wait to wait for it",
            )
        if not said and time.monotonic() - started > PORT_WAIT_NOTE:
            said = True
            svc.notify(f"waiting for job {job.id} to record its AIF_PORT (its setup may still run)")
        time.sleep(1.0 if poll is None else poll)  # the job dir, not Slurm: one read
        svc.refresh([job])
        if job.is_final:
            raise JobNotRunning(f"job {job.id} ({job.name}) ended ({job.state}) before it recorded its AIF_PORT")


def _node_host(svc: Service, job: Job, node: str, first: str) -> str:
    """The host of the job's node `node` (an index or a name; squeue lists the nodes)."""
    from aifactory_cli.service.interactive import pick_nodes

    if _site_is_local(svc, job):
        pick_nodes(job, ["localhost"], node, False)  # only node 0 / localhost: the job runs here
        return first
    from aifactory_cli.backends.slurm import SlurmBackend

    backend = svc.backend(job.site)
    assert isinstance(backend, SlurmBackend)
    found = backend.job_nodes(job)
    if found is None or found.state != states.RUNNING:
        raise JobNotRunning(f"job {job.id} ({job.name}) is no longer running: there is nothing to forward to")
    return pick_nodes(job, found.nodes, node, False)[0]


def _read_port(transport: Transport, path: str) -> tuple[str, int] | None:
    try:
        return jobdir.parse_aif_port(transport.read_bytes(path).decode(errors="replace"))
    except FileNotFoundError:
        return None


def find_token_url(text: str, port: int | None = None) -> str | None:
    """The path and query of the last URL with a `token=` in `text` (a Jupyter server's log), e.g.
    `/lab?token=abc`; with `port`, a URL naming another port is skipped."""
    found = None
    for match in _TOKEN_URL.finditer(text):
        netloc = match.group(0).split("//", 1)[1].split("/", 1)[0]
        named = netloc.rsplit(":", 1)[1] if ":" in netloc else None
        if port is None or named is None or named == str(port):
            found = match.group(1)
    return found


class TokenWatch:
    """Looks for a token URL in the job's stderr and stdout (its element's, for a sweep), reading
    only what was added since the last look."""

    OVERLAP = 512  # a URL cut by the end of the last read is found whole in the next one

    def __init__(self, svc: Service, target: Target) -> None:
        self.svc = svc
        self.target = target
        self.task = target.task
        self.offsets = {True: 0, False: 0}
        self.found: str | None = None

    def look(self) -> str | None:
        """The path and query of the token URL (`/lab?token=...`) once found, else None."""
        if self.found:
            return self.found
        backend = self.svc.backend(self.target.job.site)
        for stderr in (True, False):
            start = max(0, self.offsets[stderr] - self.OVERLAP)
            data = backend.read_log(self.target.job, stderr=stderr, task=self.task, offset=start)
            self.offsets[stderr] = start + len(data)
            self.found = find_token_url(data.decode(errors="replace"), self.target.port)
            if self.found:
                return self.found
        return None


# --- the local end ---------------------------------------------------------------------------------------


def listen(local_port: int | None, remote_port: int) -> tuple[socket.socket, str | None]:
    """A listening socket on 127.0.0.1: `local_port`, else the remote port's number when it is free
    here, else any free port; with a note when the remote port's number was taken."""
    if local_port is not None:
        if not 0 < local_port < 65536:
            raise BadInput(f"--local-port {local_port} is not a TCP port", "give a number from 1 to 65535")
        try:
            return _bind(local_port), None
        except OSError as exc:
            raise BadInput(
                f"cannot listen on 127.0.0.1:{local_port}: "
                + ("it is in use on this machine" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))),
                "pick another with --local-port, or leave --local-port out to get a free one",
            ) from exc
    try:
        return _bind(remote_port), None
    except OSError:
        sock = _bind(0)
        port = sock.getsockname()[1]
        return sock, f"127.0.0.1:{remote_port} is in use on this machine: forwarding from 127.0.0.1:{port} instead"


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a rerun right after Ctrl-C binds again
        sock.bind(("127.0.0.1", port))
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    return sock


class Forwarder:
    """Accepts on `listener`; each connection gets its own tunnel to host:port and a relay thread."""

    def __init__(
        self, transport: Transport, host: str, port: int, listener: socket.socket, notify: Callable[[str], None]
    ) -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self.listener = listener
        self.notify = notify
        self.connections = 0  # accepted so far
        self.failed = 0  # accepted, but the site could not connect them
        self._stop_r, self._stop_w = socket.socketpair()  # readable once stop() ran: every relay ends
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._open: set[object] = set()
        self._last_refusal = 0.0

    def serve(self, tick: Callable[[], None] | None = None, every: float = WATCH_EVERY) -> None:
        """Accept until `tick` raises (or Ctrl-C); `tick` runs about every `every` s in this thread."""
        import select

        next_tick = time.monotonic() + every
        while True:
            ready, _, _ = select.select([self.listener], [], [], max(0.0, min(0.5, next_tick - time.monotonic())))
            if ready:
                try:
                    conn, _ = self.listener.accept()
                except OSError:
                    continue
                self.connections += 1
                thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
                with self._lock:
                    self._threads = [t for t in self._threads if t.is_alive()]
                    self._threads.append(thread)
                thread.start()
            if tick is not None and time.monotonic() >= next_tick:
                tick()
                next_tick = time.monotonic() + every

    def _handle(self, conn: socket.socket) -> None:
        from aifactory_cli.transport.relay import SocketPipe, relay

        local = SocketPipe(conn)
        with self._lock:
            self._open.add(local)
        tunnel = None
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tunnel = self.transport.open_tunnel(self.host, self.port)
            with self._lock:
                self._open.add(tunnel)
            relay(local, tunnel, stop=self._stop_r)
        except RemoteError as exc:  # TunnelRefused: nothing listens there (yet)
            self.failed += 1
            if time.monotonic() - self._last_refusal > 5:  # one line, not one per browser request
                self._last_refusal = time.monotonic()
                self.notify(f"warning: a connection could not be forwarded: {exc.message}")
        except Exception:  # the local client went away, the channel broke: this connection only
            self.failed += 1
        finally:
            for end in (local, tunnel):
                if end is not None:
                    with self._lock:
                        self._open.discard(end)
                    with contextlib.suppress(Exception):
                        end.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, end every relay (closing its channel), wait for their threads."""
        with contextlib.suppress(OSError):
            self.listener.close()
        with contextlib.suppress(OSError):
            self._stop_w.send(b"x")
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = list(self._open)
        for end in left:
            with contextlib.suppress(Exception):
                end.close()  # type: ignore[attr-defined]
        for sock in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                sock.close()


def watch_job(svc: Service, target: Target) -> Callable[[], None]:
    """The forward's tick: refresh the job (at most every poll_interval of its site); raises
    JobNotRunning when it has ended."""

    def tick() -> None:
        job = target.job
        try:
            svc.refresh([job])
        except RemoteError as exc:
            svc.notify(f"warning: could not ask {job.site} about job {job.id}: {exc.message}")
            return
        if job.is_final:
            raise JobNotRunning(f"job {job.id} ({job.name}) ended ({job.state}): the forward stopped")

    return tick
