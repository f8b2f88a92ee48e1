"""`aifactory exec` and `aifactory shell` on the fake site (FakeTransport + FakeSlurm, with a stand-in
`srun` that runs the step's command on this machine), the agent's session relay with a fake site, the
relay loop (input, EOF, window size on SIGWINCH), and the step's environment from the template."""

from __future__ import annotations

import fcntl
import os
import queue
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import SITE, FakeTransport, Session, fake_site, spec

from aifactory_cli.errors import EXIT_BAD_INPUT, EXIT_NOT_FOUND, BadInput, NotFound, RemoteError
from aifactory_cli.service import interactive, running
from aifactory_cli.service.interactive import Streams
from aifactory_cli.transport.agent.client import AgentTransport
from aifactory_cli.transport.agent.server import AgentServer
from aifactory_cli.transport.interactive import EXIT, PtyRequest, relay
from aifactory_cli.transport.ssh.settings import SshSettings

# a stand-in for srun inside an allocation: runs the command once per node of --nodelist, with the
# step's SLURM values, labels lines as --label does, and exits with the highest exit code
FAKE_SRUN = r"""#!PYTHON
import json, os, subprocess, sys
args = sys.argv[1:]
opts = {}
while args and args[0].startswith("--"):
    key, _, value = args.pop(0).partition("=")
    opts[key] = value
with open(os.path.join(os.environ["HOME"], "srun.calls"), "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\n")
codes = []
for n, node in enumerate(opts["--nodelist"].split(",")):
    env = dict(os.environ, SLURMD_NODENAME=node, SLURM_JOB_ID=opts["--jobid"], SLURM_PROCID=str(n))
    done = subprocess.run(args, env=env, capture_output=True)
    for stream, data in ((sys.stdout, done.stdout), (sys.stderr, done.stderr)):
        for line in data.decode().splitlines(True):
            stream.write((f"{n}: " if "--label" in opts else "") + line)
    codes.append(done.returncode)
sys.exit(max(codes))
"""


class ProcessSession:
    """A `transport.interactive.Session` over a local process (what an SSH channel gives)."""

    def __init__(self, line: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        pipe = subprocess.PIPE
        self.proc = subprocess.Popen(["bash", "-c", line], stdin=pipe, stdout=pipe, stderr=pipe, env=env, cwd=cwd)
        self.wake_r, self.wake_w = os.pipe()
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.resized: list[tuple[int, int]] = []
        self.open_streams = 2
        self.lock = threading.Lock()
        for kind, stream in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            threading.Thread(target=self._pump, args=(kind, stream), daemon=True).start()

    def _pump(self, kind: str, stream: Any) -> None:
        while data := os.read(stream.fileno(), 65536):
            self.queue.put((kind, data))
            os.write(self.wake_w, b"x")
        with self.lock:
            self.open_streams -= 1
            last = self.open_streams == 0
        if last:
            self.queue.put((EXIT, self.proc.wait()))
            os.write(self.wake_w, b"x")

    def fileno(self) -> int:
        return self.wake_r

    def events(self) -> list[Any]:
        out = []
        while not self.queue.empty():
            out.append(self.queue.get())
        if out:
            os.read(self.wake_r, 65536)
        return out

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send_eof(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def resize(self, cols: int, rows: int) -> None:
        self.resized.append((cols, rows))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class StepTransport(FakeTransport):
    """The fake site's transport, with sessions: the line runs in the fake home, srun on PATH."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        srun = self.slurm.bin / "srun"
        srun.write_text(FAKE_SRUN.replace("PYTHON", sys.executable, 1))
        srun.chmod(0o755)
        module = self.slurm.bin / "module"  # Lmod's `module`, as on the site: records what was loaded
        module.write_text('#!/bin/sh\necho "$@" >> "$HOME/module.calls"\n')
        module.chmod(0o755)
        self.sessions: list[tuple[str, PtyRequest | None]] = []

    def open_session(self, line: str, pty: PtyRequest | None = None) -> ProcessSession:
        self.sessions.append((line, pty))
        env = {**os.environ, "HOME": str(self.home), "PATH": f"{self.slurm.bin}:{os.environ['PATH']}"}
        return ProcessSession(line, env=env, cwd=self.home)

    def srun_calls(self) -> list[str]:
        path = self.home / "srun.calls"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aif_home: Path) -> Session:
    fake_site(tmp_path, monkeypatch)  # the site's profile and the account
    return Session(StepTransport(tmp_path / "site"))


def fake(session: Session) -> StepTransport:
    assert isinstance(session.fake, StepTransport)
    return session.fake


def streams() -> tuple[Streams, dict[str, bytearray]]:
    got = {"out": bytearray(), "err": bytearray()}
    return Streams(got["out"].extend, got["err"].extend, None, False), got


HOLD = 'env: {GREETING: "it\'s $HOME"}\nrun: sleep 60\n'


def submitted(session: Session, tmp_path: Path, body: str = HOLD) -> tuple[str, str]:
    with session() as svc:
        job = svc.submit(svc.prepare(spec(tmp_path, "hold", body), SITE))
    assert job.slurm_job_id
    return job.id, job.slurm_job_id


def test_exec_runs_the_command_on_the_first_node_in_the_job_dir_with_the_jobs_env(
    session: Session, tmp_path: Path
) -> None:
    job_id, sid = submitted(session, tmp_path)
    fake(session).slurm.start(sid, nodes="nid[005000-005001]")
    out, got = streams()
    with session() as svc:
        command = ["sh", "-c", 'echo "$SLURMD_NODENAME|$SLURM_JOB_ID|$GREETING|$AIF_JOB_ID|$(pwd)"; exit 7']
        rc = interactive.execute(svc, job_id, command, streams=out)
        workdir = svc.store.find(job_id).workdir
    assert rc == 7, got
    assert got["out"].decode() == f"nid005000|{sid}|it's $HOME|{job_id}|{workdir}\n"
    assert (fake(session).home / "module.calls").read_text() == "load LUMI/25.03 partition/C\n"
    call = fake(session).srun_calls()[-1]
    assert f'"--jobid={sid}"' in call and '"--overlap"' in call and '"--nodelist=nid005000"' in call


def test_exec_on_every_node_labels_lines_with_node_names_and_returns_the_highest_code(
    session: Session, tmp_path: Path
) -> None:
    job_id, sid = submitted(session, tmp_path)
    fake(session).slurm.start(sid, nodes="nid[005000-005001]")
    out, got = streams()
    with session() as svc:
        command = ["sh", "-c", 'echo "on $SLURMD_NODENAME"; echo "err $SLURMD_NODENAME" >&2; exit $SLURM_PROCID']
        rc = interactive.execute(svc, job_id, command, all_nodes=True, streams=out)
    assert rc == 1
    assert got["out"].decode().splitlines() == ["nid005000: on nid005000", "nid005001: on nid005001"]
    assert got["err"].decode().splitlines() == ["nid005000: err nid005000", "nid005001: err nid005001"]


def test_exec_on_a_chosen_node_by_index_or_name_and_a_node_the_job_does_not_have(
    session: Session, tmp_path: Path
) -> None:
    job_id, sid = submitted(session, tmp_path)
    fake(session).slurm.start(sid, nodes="nid[005000-005001]")
    asked: list[int] = []
    for node in ("1", "nid005001"):
        out, got = streams()
        with session() as svc:
            assert interactive.execute(svc, job_id, ["printenv", "SLURMD_NODENAME"], node=node, streams=out) == 0
        assert got["out"] == b"nid005001\n"
        asked.append(len(fake(session).slurm.calls("sacct")))
    assert asked[0] >= 1 and asked[1] == asked[0]  # known RUNNING: one squeue (state and nodes), no sacct
    with session() as svc, pytest.raises(BadInput) as info:
        interactive.execute(svc, job_id, ["true"], node="nid009999", streams=streams()[0])
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert "0=nid005000, 1=nid005001" in info.value.message
    with session() as svc, pytest.raises(BadInput):
        interactive.execute(svc, job_id, ["true"], node="2", streams=streams()[0])
    with session() as svc, pytest.raises(BadInput, match="two ways"):
        interactive.execute(svc, job_id, ["true"], node="0", all_nodes=True, streams=streams()[0])


def test_an_interrupted_exec_cancels_its_step(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the command runs: the step is cancelled by its name (closing the channel alone
    would leave srun running until it next writes)."""
    import aifactory_cli.transport.interactive as transport_interactive

    job_id, sid = submitted(session, tmp_path)
    fake(session).slurm.start(sid)

    def interrupted(*args: Any, **kwargs: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(transport_interactive, "relay", interrupted)
    with session() as svc, pytest.raises(KeyboardInterrupt):
        interactive.execute(svc, job_id, ["sleep", "60"], streams=streams()[0])
    line = fake(session).sessions[-1][0]
    name = next(w for w in line.split() if w.startswith("--job-name=")).split("=", 1)[1]
    assert name.startswith("aif-exec-")
    cancels = [c for c in fake(session).commands if "scancel" in c]
    assert len(cancels) == 1 and f"--jobs={sid}" in cancels[0] and f"n={name}" in cancels[0]


def test_a_pending_job_is_waited_for_or_refused_with_no_wait(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, sid = submitted(session, tmp_path)
    with session() as svc, pytest.raises(NotFound, match=r"has not started yet \(PENDING") as info:
        interactive.execute(svc, job_id, ["true"], wait=False, streams=streams()[0])
    assert info.value.exit_code == EXIT_NOT_FOUND and "--no-wait" in (info.value.hint or "")  # as forward's
    assert fake(session).srun_calls() == []
    naps: list[float] = []

    def nap(seconds: float) -> None:  # the wait between two looks: the job starts meanwhile
        naps.append(seconds)
        fake(session).slurm.start(sid)

    monkeypatch.setattr(running, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=nap))
    out, got = streams()
    with session() as svc:
        assert interactive.execute(svc, job_id, ["echo", "started"], streams=out) == 0
    assert got["out"] == b"started\n"
    assert any(n.startswith(f"waiting for job {job_id}") and "PENDING" in n for n in session.notes)
    assert naps == [running.WAIT_POLL]  # one wait, as long as the poll (the profile's is shorter)


def test_an_ended_job_is_refused_as_not_found(session: Session, tmp_path: Path) -> None:
    job_id, sid = submitted(session, tmp_path)
    fake(session).slurm.start(sid)
    fake(session).slurm.finish(sid, code=0)
    for call in (  # --no-wait first: a broken state check then fails here instead of waiting forever
        lambda svc: interactive.execute(svc, job_id, ["true"], wait=False, streams=streams()[0]),
        lambda svc: interactive.execute(svc, job_id, ["true"], streams=streams()[0]),
        lambda svc: interactive.shell(svc, job_id, streams=Streams(print, print, None, True)),
    ):
        with session() as svc, pytest.raises(NotFound, match="has ended \\(COMPLETED, exit 0\\)") as info:
            call(svc)
        assert info.value.exit_code == EXIT_NOT_FOUND
    assert fake(session).srun_calls() == []


def test_a_sweep_and_an_empty_command_are_refused(session: Session, tmp_path: Path) -> None:
    job_id, _ = submitted(session, tmp_path, "matrix: {LR: ['1', '2']}\nrun: sleep 60\n")
    with session() as svc, pytest.raises(BadInput, match="sweep"):
        interactive.execute(svc, job_id, ["true"], streams=streams()[0])
    with session() as svc, pytest.raises(BadInput, match="no command"):
        interactive.execute(svc, job_id, [], streams=streams()[0])


def test_shell_needs_a_terminal_and_refuses_before_reaching_the_site(session: Session, tmp_path: Path) -> None:
    job_id, sid = submitted(session, tmp_path)
    fake(session).slurm.start(sid, nodes="nid[005000-005001]")
    with session() as svc, pytest.raises(BadInput, match="terminal") as info:
        interactive.shell(svc, job_id, streams=Streams(print, print, 0, False))
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert fake(session).sessions == []


def test_the_shell_cli_refuses_without_a_terminal(cli: Any) -> None:
    r = cli("shell", "anyjob")
    assert r.code == 2 and "needs a terminal" in r.stderr and "Traceback" not in r.stderr


def test_the_steps_environment_is_the_templates_modules_and_env_blocks(session: Session, tmp_path: Path) -> None:
    from aifactory_cli.sites.render import step_environment

    path = tmp_path / "envjob.yaml"
    path.write_text("modules: [PyTorch/2.3]\nresources: {gpus_per_node: 2, time: 5m}\nenv: {A: x y}\nrun: 'true'\n")
    with session() as svc:
        prepared = svc.prepare(path, SITE)
    text = step_environment(prepared.resolved, "tok", "id1")
    assert "module load LUMI/25.03 partition/G PyTorch/2.3 ||" in text
    assert "export A='x y'" in text
    assert "#SBATCH" not in text and "trap" not in text and "srun" not in text
    assert text.strip() in prepared.script  # the batch script's own lines


# --- the relay loop -------------------------------------------------------------------------------------


def test_relay_feeds_input_passes_eof_and_returns_the_exit_status() -> None:
    session = ProcessSession("cat; echo done >&2; exit 4")
    r, w = os.pipe()
    os.write(w, b"line one\nline two\n")
    os.close(w)
    got = {"out": bytearray(), "err": bytearray()}
    try:
        rc = relay(session, stdout=got["out"].extend, stderr=got["err"].extend, stdin_fd=r)
    finally:
        os.close(r)
        session.close()
    assert rc == 4 and got["out"] == b"line one\nline two\n" and got["err"] == b"done\n"


def test_relay_sends_the_new_window_size_on_sigwinch() -> None:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    before = signal.getsignal(signal.SIGWINCH)
    session = ProcessSession("sleep 0.6")
    threading.Timer(0.2, os.kill, args=(os.getpid(), signal.SIGWINCH)).start()
    try:
        assert relay(session, stdout=lambda b: None, stderr=lambda b: None, winch_fd=slave) == 0
    finally:
        session.close()
        os.close(master)
        os.close(slave)
    assert session.resized == [(101, 33)]
    assert signal.getsignal(signal.SIGWINCH) == before  # the handler is put back


# --- through the connection agent -----------------------------------------------------------------------


class SessionOps:
    """The agent's view of a site that opens sessions (local processes)."""

    def __init__(self) -> None:
        self.opened: list[tuple[str, PtyRequest | None]] = []
        self.sessions: list[ProcessSession] = []

    def info(self) -> dict[str, Any]:
        return {"username": "alice", "connected": True}

    def take_opened(self) -> int:
        return 0

    def broken(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def open_session(self, line: str, pty: PtyRequest | None) -> ProcessSession:
        if line == "refuse":
            raise RemoteError("cannot open a session on fake: administratively prohibited", where="fake")
        self.opened.append((line, pty))
        self.sessions.append(ProcessSession(line))
        return self.sessions[-1]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[SessionOps, AgentTransport]]:
    ops = SessionOps()
    path = tmp_path / "a.sock"
    server = AgentServer(ops, path, 60.0, site="fake")  # type: ignore[arg-type]  # a site with sessions only
    server.bind()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    client = AgentTransport(SshSettings(host="fake.invalid"), site="fake", interactive=False, socket_path=path)
    try:
        yield ops, client
    finally:
        client.close()
        server.stop("test over")
        thread.join(10)


def test_a_session_through_the_agent_relays_both_ways(agent: tuple[SessionOps, AgentTransport]) -> None:
    ops, client = agent
    pty = PtyRequest("xterm-256color", 120, 40)
    session = client.open_session("cat; echo bye >&2; exit 3", pty)
    assert ops.opened == [("cat; echo bye >&2; exit 3", pty)]
    r, w = os.pipe()
    os.write(w, b"typed\n")
    os.close(w)
    session.resize(90, 30)
    got = {"out": bytearray(), "err": bytearray()}
    try:
        rc = relay(session, stdout=got["out"].extend, stderr=got["err"].extend, stdin_fd=r)
    finally:
        os.close(r)
        session.close()
    assert rc == 3 and got["out"] == b"typed\n" and got["err"] == b"bye\n"
    deadline = time.monotonic() + 5
    while not ops.sessions[0].resized and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ops.sessions[0].resized == [(90, 30)]
    assert client.username == "alice"  # the transport still serves requests after a session


def test_a_session_the_site_refuses_is_a_remote_error(agent: tuple[SessionOps, AgentTransport]) -> None:
    _, client = agent
    with pytest.raises(RemoteError, match="administratively prohibited"):
        client.open_session("refuse", None)


def test_the_client_going_away_stops_the_remote_command(agent: tuple[SessionOps, AgentTransport]) -> None:
    ops, client = agent
    session = client.open_session("sleep 30", None)
    session.close()
    deadline = time.monotonic() + 15
    while (not ops.sessions or ops.sessions[0].proc.poll() is None) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ops.sessions[0].proc.poll() is not None


# --- the local site ---------------------------------------------------------------------------------------


def test_exec_on_the_local_site_runs_in_the_job_dir_with_the_runners_env(
    cli: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from aifactory_cli.service.session import Service

    path = tmp_path / "lhold.yaml"
    path.write_text("name: lhold\nresources: {time: 5m}\nenv: {GREETING: hi there}\nrun: sleep 30\n")
    job_id = cli("submit", str(path), "--site", "local").stdout.strip()
    try:
        command = ["sh", "-c", 'echo "$SLURM_JOB_ID|$GREETING|$AIF_JOB_ID|$(pwd)|$AIF_HOST $AIF_PORT"; exit 5']
        with Service() as svc:
            job = svc.store.find(job_id)
            recorded = Path(job.workdir or "", "aif_port")
            for _ in range(200):  # the batch script records AIF_HOST and AIF_PORT as it starts
                if recorded.is_file() and len(recorded.read_text().split()) == 2:
                    break
                time.sleep(0.05)
            rc = interactive.execute(svc, job_id, command, streams=streams()[0])
            job = svc.store.find(job_id)
        assert rc == 5
        port = recorded.read_text().strip()  # the step sees the job's own AIF_HOST and AIF_PORT
        assert capfd.readouterr().out == f"{job.slurm_job_id}|hi there|{job_id}|{job.workdir}|{port}\n"
        with Service() as svc, pytest.raises(BadInput, match="localhost"):
            interactive.execute(svc, job_id, ["true"], node="1", streams=streams()[0])
    finally:
        cli("cancel", job_id)
