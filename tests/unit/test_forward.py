"""`aifactory forward` through the service on a fake site: where it forwards to (the job dir's
aif_port), the states it refuses or waits for, the local port it picks, the token URL it finds, and
the relay itself (each local connection gets a tunnel of the site's transport; bytes both ways,
half-closes passed on). The real thing, on the test bed: tests/real/test_forward_real.py."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import SITE, Session, fake_site, spec

from aifactory_cli.errors import EXIT_BAD_INPUT, EXIT_NOT_FOUND, BadInput, NotFound
from aifactory_cli.jobs.store import Job
from aifactory_cli.service import forward as fw


@pytest.fixture
def session(aif_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    return fake_site(tmp_path, monkeypatch)


def submitted(session: Session, tmp_path: Path, name: str = "srv") -> Job:
    with session() as svc:
        return svc.submit(svc.prepare(spec(tmp_path, name), SITE))


def running(session: Session, tmp_path: Path, port: int, host: str = "nid005000") -> Job:
    """A job that runs and recorded "HOST PORT", as its batch script does."""
    job = submitted(session, tmp_path)
    session.fake.slurm.start(job.slurm_job_id or "")
    Path(job.workdir or "", "aif_port").write_text(f"{host} {port}\n")
    return job


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    """A server on 127.0.0.1 (the fake site's nodes are this machine): reads a request to EOF, answers
    `echo:` + the request; one thread per connection."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            conn.sendall(b"echo:" + data)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def ask(port: int, payload: bytes) -> bytes:
    """Send `payload`, half-close, read the reply to EOF (as an HTTP/1.0 client does)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        return reply


def closed_at_once(port: int) -> bool:
    """Connect and read: the forwarder closes the connection without a byte (EOF, or a reset when it
    closed before our side was done)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            return sock.recv(1) == b""
        except ConnectionResetError:
            return True


class Stop(Exception):
    pass


@contextlib.contextmanager
def forwarding(session: Session, target: fw.Target, local_port: int | None = None) -> Iterator[tuple[int, list[str]]]:
    """A Forwarder serving in a thread (its tick ends it); yields the local port and its notes."""
    notes: list[str] = []
    listener, note = fw.listen(local_port, target.port)
    if note:
        notes.append(note)
    forwarder = fw.Forwarder(session.fake, target.host, target.port, listener, notes.append)
    done = threading.Event()

    def tick() -> None:
        if done.is_set():
            raise Stop

    def serve() -> None:
        with contextlib.suppress(Stop):
            forwarder.serve(tick, 0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], notes
    finally:
        done.set()
        thread.join(5)
        forwarder.stop()
        assert not thread.is_alive()


# --- where to -------------------------------------------------------------------------------------------


def test_each_connection_gets_a_tunnel_to_the_recorded_node_and_port(session: Session, tmp_path: Path) -> None:
    with echo_server() as port:
        job = running(session, tmp_path, port)
        with session() as svc:
            target = fw.find_target(svc, job.id)
        assert (target.host, target.port, target.recorded_port, target.local_site) == ("nid005000", port, port, False)
        with forwarding(session, target) as (local, notes):
            # the job's port number is taken here (by the echo server itself): another one, and a note
            assert local != port and notes == [
                f"127.0.0.1:{port} is in use on this machine: forwarding from 127.0.0.1:{local} instead"
            ]
            big = bytes(range(256)) * 8192  # 2 MiB: many chunks each way
            assert ask(local, big) == b"echo:" + big
            replies = []
            threads = [threading.Thread(target=lambda i=i: replies.append(ask(local, b"%d" % i))) for i in range(10)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            assert sorted(replies) == sorted(b"echo:%d" % i for i in range(10))
    assert session.fake.tunnels == [("nid005000", port)] * 11  # one tunnel per connection


def test_remote_port_replaces_the_port_never_the_node(session: Session, tmp_path: Path) -> None:
    job = running(session, tmp_path, 41234, host="nid005001")
    with session() as svc:
        target = fw.find_target(svc, job.id, 8888)
    assert (target.host, target.port, target.recorded_port) == ("nid005001", 8888, 41234)
    with session() as svc, pytest.raises(BadInput, match="REMOTE_PORT 70000 is not a TCP port"):
        fw.find_target(svc, job.id, 70000)


def test_a_connection_the_site_cannot_make_is_closed_with_one_warning(session: Session, tmp_path: Path) -> None:
    with socket.socket() as bound:  # bound, not listening: connections to it are refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        job = running(session, tmp_path, port)
        with session() as svc:
            target = fw.find_target(svc, job.id)
        with forwarding(session, target) as (local, notes):
            assert closed_at_once(local) and closed_at_once(local)
    refused = [n for n in notes if "could not be forwarded" in n]
    assert len(refused) == 1 and f"nid005000:{port}" in refused[0]


# --- states -----------------------------------------------------------------------------------------------


def test_a_pending_job_is_waited_for_or_refused_with_no_wait(session: Session, tmp_path: Path) -> None:
    job = submitted(session, tmp_path)
    with session() as svc, pytest.raises(NotFound, match=r"has not started yet \(PENDING: Priority\)") as info:
        fw.find_target(svc, job.id, wait=False)
    assert info.value.exit_code == EXIT_NOT_FOUND and "leave out --no-wait" in (info.value.hint or "")

    seen: list[str] = []

    def on_wait(j: Job) -> None:  # the job starts while forward waits, and records its port
        seen.append(j.state)
        session.fake.slurm.start(job.slurm_job_id or "")
        Path(job.workdir or "", "aif_port").write_text("nid005000 40001\n")

    with session() as svc:
        target = fw.find_target(svc, job.id, on_wait=on_wait, poll=0.01)
    assert seen == ["PENDING"] and target.port == 40001 and target.job.state == "RUNNING"


def test_node_chooses_which_of_the_jobs_nodes_is_reached_with_the_jobs_aif_port(
    session: Session, tmp_path: Path
) -> None:
    job = submitted(session, tmp_path)
    session.fake.slurm.start(job.slurm_job_id or "", nodes="nid[005000-005001]")
    Path(job.workdir or "", "aif_port").write_text("nid005000 40003\n")
    with session() as svc:
        assert fw.find_target(svc, job.id).host == "nid005000"  # the first node by default
        for node in ("1", "nid005001"):
            target = fw.find_target(svc, job.id, node=node)
            assert (target.host, target.port, target.recorded_port) == ("nid005001", 40003, 40003)
        assert fw.find_target(svc, job.id, 41000, node="1").port == 41000
        with pytest.raises(BadInput, match="0=nid005000, 1=nid005001") as info:
            fw.find_target(svc, job.id, node="nid009999")
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_an_ended_job_is_refused_with_exit_4(session: Session, tmp_path: Path) -> None:
    job = running(session, tmp_path, 40002)
    session.fake.slurm.finish(job.slurm_job_id or "", code=0)
    with session() as svc, pytest.raises(fw.JobNotRunning, match=r"has ended \(COMPLETED, exit 0\)") as info:
        fw.find_target(svc, job.id)
    assert info.value.exit_code == EXIT_NOT_FOUND and "nothing to forward" in info.value.message


def test_a_running_job_that_has_not_recorded_its_port_yet(session: Session, tmp_path: Path) -> None:
    job = submitted(session, tmp_path)
    session.fake.slurm.start(job.slurm_job_id or "")
    with session() as svc, pytest.raises(NotFound, match="has not recorded its AIF_PORT yet"):
        fw.find_target(svc, job.id, wait=False)
    Path(job.workdir or "", "aif_port").write_text("nid005000")  # half written: not yet
    with session() as svc, pytest.raises(NotFound, match="has not recorded its AIF_PORT yet"):
        fw.find_target(svc, job.id, wait=False)
    # submitted by an aifactory without AIF_PORT: said at once, not waited for
    with session() as svc:
        svc.store.update(svc.store.find(job.id), script="#!/bin/bash\necho old\n")
        with pytest.raises(NotFound, match="did not record AIF_PORT"):
            fw.find_target(svc, job.id)


def test_the_forward_stops_when_the_job_ends(session: Session, tmp_path: Path) -> None:
    job = running(session, tmp_path, 40003)
    with session() as svc:
        target = fw.find_target(svc, job.id)
        tick = fw.watch_job(svc, target)
        tick()  # still running: nothing happens
        session.fake.slurm.finish(job.slurm_job_id or "", code=0)
        with pytest.raises(fw.JobNotRunning, match=r"ended \(COMPLETED\): the forward stopped"):
            tick()


# --- the local end -----------------------------------------------------------------------------------------


def test_a_local_port_in_use_is_named_with_the_fix() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(BadInput) as info:
            fw.listen(port, 8888)
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert f"127.0.0.1:{port}: it is in use on this machine" in info.value.message
    assert "--local-port" in (info.value.hint or "")
    with pytest.raises(BadInput, match="--local-port 0 is not a TCP port"):
        fw.listen(0, 8888)


def test_the_remote_ports_number_is_taken_when_free() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        free = probe.getsockname()[1]
    listener, note = fw.listen(None, free)
    with listener:
        assert listener.getsockname() == ("127.0.0.1", free) and note is None


# --- the token ------------------------------------------------------------------------------------------


JUPYTER_LOG = """[I 2026-12-01 03:00:01.123 ServerApp] Jupyter Server 2.14.2 is running at:
[I 2026-12-01 03:00:01.123 ServerApp] http://nid005000:41234/lab?token=3f9c1e0b2a7d
[I 2026-12-01 03:00:01.123 ServerApp]     http://127.0.0.1:41234/lab?token=3f9c1e0b2a7d
[C 2026-12-01 03:00:01.125 ServerApp]
    To access the server, open this file in a browser: file:///home/u/.local/share/jupyter/runtime/x.html
"""


def test_find_token_url() -> None:
    assert fw.find_token_url(JUPYTER_LOG, 41234) == "/lab?token=3f9c1e0b2a7d"
    assert fw.find_token_url(JUPYTER_LOG, 8888) is None  # another server's URL
    assert fw.find_token_url("see http://host/tree?a=1&token=abc-_9 now") == "/tree?a=1&token=abc-_9"
    assert fw.find_token_url("no url here; token=abc") is None


def test_the_token_is_found_in_the_logs_as_they_grow(session: Session, tmp_path: Path) -> None:
    job = running(session, tmp_path, 41234)
    stderr = Path(job.workdir or "", "stderr.log")
    with session() as svc:
        watch = fw.TokenWatch(svc, fw.find_target(svc, job.id))
        assert watch.look() is None
        stderr.write_text("x" * 5000 + "\n" + JUPYTER_LOG[:120])  # the URL line is cut mid-way
        assert watch.look() is None
        with stderr.open("a") as fh:
            fh.write(JUPYTER_LOG[120:])
        assert watch.look() == "/lab?token=3f9c1e0b2a7d"
        assert watch.offsets[True] == stderr.stat().st_size  # only new bytes are read each time


def test_a_sweep_forwards_to_the_element_asked_for(session: Session, tmp_path: Path) -> None:
    with session() as svc:
        job = svc.submit(svc.prepare(spec(tmp_path, "sw", "run: echo hi\nmatrix: {X: [a, b]}\n"), SITE))
    session.fake.slurm.start(job.slurm_job_id or "")
    for i in (0, 1):
        Path(job.workdir or "", f"aif_port.{i}").write_text(f"nid00500{i} 4100{i}\n")
    with session() as svc:
        assert (fw.find_target(svc, job.id).host, fw.find_target(svc, job.id).port) == ("nid005000", 41000)
        target = fw.find_target(svc, job.id, task=1)
        assert (target.host, target.port, target.task) == ("nid005001", 41001, 1)
        # the token is looked for in that element's log, not element 0's
        Path(job.workdir or "", "stderr.0.log").write_text("http://nid005000:41000/lab?token=element0\n")
        Path(job.workdir or "", "stderr.1.log").write_text("http://nid005001:41001/lab?token=element1\n")
        assert fw.TokenWatch(svc, target).look() == "/lab?token=element1"
        with pytest.raises(BadInput, match="has no element 2"):
            fw.find_target(svc, job.id, task=2)
        with pytest.raises(BadInput, match="is a sweep") as info:  # elements have nodes of their own
            fw.find_target(svc, job.id, node="1")
        assert "--task" in (info.value.hint or "")


# --- the command, on the local site (its jobs run on this machine) --------------------------------------


HTTP_JOB = (
    "name: web\nresources: {time: 5m}\nrun: |\n  mkdir -p site && echo hello-local > site/index.html\n"
    '  cd site && exec python3 -m http.server "$AIF_PORT" --bind "$AIF_HOST"\n'
)


def test_forward_on_the_local_site(cli, aif_home: Path, tmp_path: Path) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    (tmp_path / "web.yaml").write_text(HTTP_JOB)
    submitted = cli("submit", str(tmp_path / "web.yaml"), "--json")
    assert submitted.code == 0, submitted.stderr
    job = json.loads(submitted.stdout)["jobs"][0]
    try:
        deadline = time.monotonic() + 30
        while not (Path(job["workdir"]) / "aif_port").is_file():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        port = int((Path(job["workdir"]) / "aif_port").read_text().split()[1])
        # without --local-port: the server is already on this machine; forward says so and ends
        r = cli("forward", job["id"])
        assert r.code == 0 and r.stdout == f"http://127.0.0.1:{port}/\n", r.stderr
        assert "runs on this machine" in r.stderr and "nothing to forward" in r.stderr
        # with --local-port: a relay until Ctrl-C
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            local = probe.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "aifactory_cli", "forward", job["id"], "--local-port", str(local)],
            env={**os.environ, "NO_COLOR": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline() == f"http://127.0.0.1:{local}/\n"
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{local}/", timeout=10) as reply:
                    assert reply.read() == b"hello-local\n"
                break
            except OSError:  # the server is still starting
                assert time.monotonic() < deadline
                time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "forward stopped" in err, err
    finally:
        cli("cancel", job["id"])
    r = cli("forward", job["id"])
    assert r.code == 4 and "has ended (CANCELLED" in r.stderr and "Traceback" not in r.stderr, r.stderr
