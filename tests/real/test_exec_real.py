"""`aifactory exec` and `aifactory shell` on the test bed (real Slurm 22.05 behind real sshd) and on
the local site: a 2-node lumi-bed job that sleeps, steps inside it on each node, exit codes passed
through, a shell driven through a pseudo-terminal, the same through the connection agent (one login),
and the refusals (pending with --no-wait, ended, a node the job does not have).

On the bed every node's `hostname` is the VM's (`vm`): the node a step ran on shows in
`$SLURMD_NODENAME`, which the tests print instead."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real.bedjobs import aif, bed_env
from tests.real.conftest import TESTBED_ACCOUNT, TESTBED_SSH_CONFIG
from tests.real.test_agent import kill_agents

pytestmark = pytest.mark.real

HOLD = "name: hold\nresources: {nodes: 2, time: 5m}\nenv: {GREETING: hi there}\nrun: sleep 240\n"
LOCAL_HOLD = "name: lhold\nresources: {time: 5m}\nenv: {GREETING: hi local}\nrun: sleep 240\n"
SOON = "name: soon\nresources: {time: 5m}\nslurm: {begin: now+8}\nrun: sleep 120\n"
GPUS = "name: gpus\nresources: {nodes: 1, gpus_per_node: 8, time: 5m}\nrun: sleep 120\n"
LATER = "name: later\nresources: {time: 5m}\nslurm: {begin: now+600}\nrun: 'true'\n"


class Bed:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = {**bed_env(tmp), "AIFACTORY_ACCOUNT": TESTBED_ACCOUNT}
        self.jobs: dict[str, dict] = {}

    def aif(
        self, *args: str, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return aif(list(args), {**self.env, **(env or {})}, self.tmp, timeout=timeout)

    def submit(self, key: str, text: str, site: str) -> dict:
        path = self.tmp / f"{key}.yaml"
        path.write_text(text)
        r = self.aif("submit", str(path), "--site", site, "--json")
        assert r.returncode == 0, r.stderr
        self.jobs[key] = json.loads(r.stdout)["jobs"][0]
        return self.jobs[key]


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    b = Bed(tmp_path_factory.mktemp("exec"))
    b.submit("hold", HOLD, "lumi-bed")
    b.submit("local", LOCAL_HOLD, "local")
    try:
        yield b
    finally:
        b.aif("cancel", *[j["id"] for j in b.jobs.values()])
        kill_agents(b.tmp / "home")


def drive_shell(args: list[str], env: dict[str, str], cwd: Path, lines: list[tuple[str, str]]) -> tuple[int, str]:
    """`aifactory ARGS` on a pseudo-terminal, as a person at a terminal: for each (WAIT_FOR, TYPE),
    wait until the output matches the regex WAIT_FOR, then type TYPE and Enter. Returns (exit code,
    everything the terminal showed)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: aifactory, with the pty as its terminal
        os.chdir(cwd)
        os.execvpe(sys.executable, [sys.executable, "-m", "aifactory_cli", *args], env)
    seen = b""

    def shown() -> str:
        return seen.decode(errors="replace")

    def until(pattern: str, timeout: float = 30) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while not re.search(pattern.encode(), seen):
            assert time.monotonic() < deadline, (
                f"no {pattern!r} on the terminal; it showed:\n{seen.decode(errors='replace')}"
            )
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    break

    try:
        for wait_for, typed in lines:
            until(wait_for)
            os.write(fd, typed.encode() + b"\r")
        deadline = time.monotonic() + 30
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            assert time.monotonic() < deadline, (
                f"the shell did not end; the terminal showed:\n{seen.decode(errors='replace')}"
            )
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                with contextlib.suppress(OSError):
                    seen += os.read(fd, 65536)
        with contextlib.suppress(OSError):
            while select.select([fd], [], [], 0.1)[0] and (chunk := os.read(fd, 65536)):
                seen += chunk
        return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")
    finally:
        os.close(fd)


PROMPT = r"[$#] $"  # bash's prompt, at the end of what the terminal shows


def test_exec_on_every_node_of_a_two_node_job(bed: Bed) -> None:
    job = bed.jobs["hold"]
    started = time.monotonic()
    command = 'echo "$SLURMD_NODENAME|$GREETING|$(pwd)|$AIF_HOST $AIF_PORT"'
    r = bed.aif("exec", job["id"], "--all-nodes", "--", "sh", "-c", command)
    took = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    lines = sorted(r.stdout.splitlines())
    assert len(lines) == 2, r.stdout
    recorded = Path(job["workdir"], "aif_port").read_text().strip()  # the job's, as its tasks see it
    nodes = []
    for line in lines:
        label, _, rest = line.partition(": ")
        node, greeting, cwd, port = rest.split("|")
        assert label == node and node.startswith("nid") and greeting == "hi there"
        assert cwd == job["workdir"] and port == recorded and port.startswith("nid"), line
        nodes.append(node)
    assert len(set(nodes)) == 2
    print(f"exec --all-nodes round trip (login per command, job running): {took:.2f} s")


def test_exec_passes_the_exit_code_and_the_words_through(bed: Bed) -> None:
    job = bed.jobs["hold"]
    r = bed.aif("exec", job["id"], "--", "sh", "-c", "exit 7")
    assert r.returncode == 7, r.stderr
    r = bed.aif("exec", job["id"], "--all-nodes", "--", "sh", "-c", "exit $((SLURM_NODEID + 3))")
    assert r.returncode == 4, r.stderr  # the highest of the nodes' exit codes, as srun gives it
    words = ["a b", "$HOME", "`id`", "x; echo injected", "*"]
    r = bed.aif("exec", job["id"], "--node", "1", "--", "printf", "%s\\n", *words)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == words
    r = bed.aif("exec", job["id"], "--node", "7", "--", "true")
    assert r.returncode == 2 and "has no node '7'" in r.stderr and "0=nid" in r.stderr and "1=nid" in r.stderr


def test_ctrl_c_during_exec_cancels_its_step(bed: Bed) -> None:
    job = bed.jobs["hold"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "aifactory_cli", "exec", job["id"], "--", "sh", "-c", "echo started; exec sleep 120"],
        env=bed.env,
        cwd=bed.tmp,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    r = bed.aif(
        "exec", job["id"], "--", "squeue", "--steps", "--noheader", f"--jobs={job['slurm_job_id']}", "--format=%j"
    )
    names = r.stdout.split()
    assert r.returncode == 0 and sum(n.startswith("aif-exec-") for n in names) == 1, names  # the listing's own


def test_shell_through_a_pty_sees_the_job_and_passes_the_exit_status(bed: Bed) -> None:
    job = bed.jobs["hold"]
    code, shown = drive_shell(
        ["shell", job["id"]],
        bed.env,
        bed.tmp,
        [(PROMPT, 'echo "id=$SLURM_JOB_ID node=$SLURMD_NODENAME g=$GREETING"'), (r"id=\d+ node=nid", "exit 3")],
    )
    assert code == 3, shown
    assert f"id={job['slurm_job_id']} node=nid" in shown and "g=hi there" in shown


def test_exec_and_shell_through_the_connection_agent_use_its_one_login(bed: Bed) -> None:
    from aifactory_cli.transport.agent.client import AgentTransport
    from aifactory_cli.transport.ssh.settings import SshSettings

    job = bed.jobs["hold"]
    env = {"AIFACTORY_PERSIST": "60"}
    assert bed.aif("status", job["id"], env=env).returncode == 0  # starts the agent: the one login
    timings = []
    for _ in range(3):
        started = time.monotonic()
        r = bed.aif("exec", job["id"], "--", "printenv", "SLURM_JOB_ID", env=env)
        timings.append(time.monotonic() - started)
        assert r.returncode == 0 and r.stdout.strip() == job["slurm_job_id"], r.stderr
    code, shown = drive_shell(
        ["shell", job["id"], "--node", "1"],
        {**bed.env, **env},
        bed.tmp,
        [(PROMPT, 'echo "id=$SLURM_JOB_ID"'), (r"id=\d+", "exit 4")],
    )
    assert code == 4 and f"id={job['slurm_job_id']}" in shown, shown
    sockets = list((bed.tmp / "home" / "state" / "agents").glob("*.sock"))
    assert len(sockets) == 1
    probe = AgentTransport(SshSettings(host="x"), site="lumi-bed", interactive=False, socket_path=sockets[0])
    try:
        assert probe.username
        assert probe.agent_info["agent_connections_opened"] == 1
    finally:
        probe.close()
    print(f"exec round trips through the agent: {', '.join(f'{t:.2f}' for t in timings)} s")


def test_exec_and_shell_through_a_jump_host_and_the_agent(bed: Bed) -> None:
    """The login node behind the bed's jump host (ssh_config ProxyJump), through the agent: one login."""
    from aifactory_cli.transport.agent.client import AgentTransport
    from aifactory_cli.transport.ssh.settings import SshSettings

    job = bed.jobs["hold"]
    config = bed.tmp / "jump-config.yaml"
    config.write_text("sites:\n  lumi-bed: {ssh_host: testbed-via-jump}\n")
    agents = bed.tmp / "home" / "state" / "agents"
    before = set(agents.glob("*.sock"))
    env = {"AIFACTORY_PERSIST": "60", "AIFACTORY_CONFIG": str(config), "AIFACTORY_SSH_CONFIG": str(TESTBED_SSH_CONFIG)}
    r = bed.aif("exec", job["id"], "--all-nodes", "--", "printenv", "SLURMD_NODENAME", env=env)
    assert r.returncode == 0, r.stderr
    assert [line.split(": ")[0] == line.split(": ")[1] for line in r.stdout.splitlines()] == [True, True]
    code, shown = drive_shell(
        ["shell", job["id"]], {**bed.env, **env}, bed.tmp, [(PROMPT, 'echo "id=$SLURM_JOB_ID"'), (r"id=\d+", "exit 5")]
    )
    assert code == 5 and f"id={job['slurm_job_id']}" in shown, shown
    [socket] = set(agents.glob("*.sock")) - before  # the agent of the route through the jump host
    probe = AgentTransport(SshSettings(host="x"), site="lumi-bed", interactive=False, socket_path=socket)
    try:
        assert probe.username and probe.agent_info["agent_connections_opened"] == 1
    finally:
        probe.close()


def test_a_pending_job_is_refused_with_no_wait_and_an_ended_one_is_not_found(bed: Bed) -> None:
    later = bed.submit("later", LATER, "lumi-bed")
    r = bed.aif("exec", later["id"], "--no-wait", "--", "true")
    assert r.returncode == 4 and "PENDING" in r.stderr and "--no-wait" in r.stderr  # as forward
    assert bed.aif("cancel", later["id"]).returncode == 0
    r = bed.aif("exec", later["id"], "--", "true")
    assert r.returncode == 4 and "has ended (CANCELLED)" in r.stderr


def test_exec_waits_for_a_pending_job_with_a_progress_line(bed: Bed) -> None:
    soon = bed.submit("soon", SOON, "lumi-bed")
    started = time.monotonic()
    r = bed.aif("exec", soon["id"], "--", "printenv", "SLURM_JOB_ID")
    took = time.monotonic() - started
    assert r.returncode == 0 and r.stdout.strip() == soon["slurm_job_id"], r.stderr
    assert f"waiting for job {soon['id']} (soon) to start: PENDING" in r.stderr, r.stderr
    print(f"exec on a job pending until now+8 s: ran after {took:.1f} s")


def test_a_step_of_a_gpu_job_sees_the_job_s_gpus(bed: Bed) -> None:
    gpus = bed.submit("gpus", GPUS, "lumi-bed")
    r = bed.aif("exec", gpus["id"], "--", "sh", "-c", 'echo "$SLURM_STEP_GPUS|$ROCR_VISIBLE_DEVICES"')
    assert r.returncode == 0, r.stderr
    assert r.stdout == "0,1,2,3,4,5,6,7|0,1,2,3,4,5,6,7\n"  # the job's 8 GPUs: the step shares them (--overlap)


def test_exec_and_shell_on_the_local_site(bed: Bed) -> None:
    job = bed.jobs["local"]
    r = bed.aif("exec", job["id"], "--", "sh", "-c", 'echo "$SLURM_JOB_ID|$GREETING|$(pwd)"; exit 6')
    assert r.returncode == 6, r.stderr
    assert r.stdout == f"{job['slurm_job_id']}|hi local|{job['workdir']}\n"
    code, shown = drive_shell(
        ["shell", job["id"]], bed.env, bed.tmp, [(PROMPT, 'echo "id=$SLURM_JOB_ID"'), (r"id=\d+", "exit 3")]
    )
    assert code == 3 and f"id={job['slurm_job_id']}" in shown, shown
