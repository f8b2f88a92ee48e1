"""`aifactory forward` under a site's connection limit: the login node's sshd has `MaxSessions 1`
(an sshd of the test's own, tests/real/own_sshd.py, in front of the bed's Slurm; its VERBOSE log
counts the logins). A job serves HTTP on $AIF_PORT; `forward` runs in the background; requests go
through it, one after another and several at once, while `status`, `wait` and `logs --follow`
(a long command that holds the one session channel) run on the same site. Forwarded connections
are direct-tcpip channels, which MaxSessions does not count (sshd_config(5)), so none is refused
and none waits for a command. With the connection agent everything is one login; without it each
aifactory process logs in once (forward too, whatever it forwards)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.real.bedjobs import aif, bed_env
from tests.real.conftest import TESTBED_ACCOUNT, TESTBED_KEY, TESTBED_USER
from tests.real.own_sshd import own_sshd
from tests.real.test_agent import kill_agents
from tests.real.test_forward_real import SERVER, _first_get, _free_port, _get, _stop

pytestmark = pytest.mark.real


def _collect(proc: subprocess.Popen[str], lines: list[tuple[float, str]]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append((time.monotonic(), line))


def _read_all(sock: socket.socket) -> bytes:
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    return reply


SHORT = "name: fwshort\nrun: for i in 1 2 3 4 5 6; do echo line $i; sleep 1; done\nresources: {nodes: 1, time: 5m}\n"


@pytest.mark.parametrize("persist", ["120", "0"], ids=["agent", "no-agent"])
def test_forward_under_max_sessions_1_with_polling_alongside(tmp_path: Path, persist: str) -> None:
    env = bed_env(tmp_path)
    env["AIFACTORY_ACCOUNT"] = TESTBED_ACCOUNT
    env["AIFACTORY_PROFILES"] = f"{tmp_path / 'profiles'}:{env['AIFACTORY_PROFILES']}"
    (tmp_path / "fwhttp.yaml").write_text(SERVER)
    (tmp_path / "fwshort.yaml").write_text(SHORT)
    commands = 0  # aifactory processes run against the site: without the agent, one login each

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        nonlocal commands
        commands += 1
        return aif(list(args), env, tmp_path, timeout=timeout)

    with own_sshd(tmp_path / "sshd", "MaxSessions 1\nAuthorizedKeysFile .ssh/authorized_keys\n") as server:
        (tmp_path / "profiles").mkdir()
        (tmp_path / "profiles" / "onesession.yaml").write_text(
            f"extends: lumi-bed\nssh: {{host: {server.address}, port: {server.port}, user: {TESTBED_USER}, "
            f"identity_file: {TESTBED_KEY}, known_hosts: {server.known_hosts}, persist: {persist}}}\n"
        )
        jobs: list[str] = []
        forward: subprocess.Popen[str] | None = None
        try:
            r = run("submit", "fwhttp.yaml", "--site", "onesession", "--json")
            assert r.returncode == 0, r.stderr
            job = json.loads(r.stdout)["jobs"][0]
            jobs.append(job["id"])
            local = _free_port()
            commands += 1
            forward = subprocess.Popen(
                [sys.executable, "-m", "aifactory_cli", "forward", job["id"], "--local-port", str(local)],
                env=env,
                cwd=str(tmp_path),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert forward.stdout is not None
            url = forward.stdout.readline().strip()
            assert url == f"http://127.0.0.1:{local}/", forward.stderr.read() if forward.stderr else ""
            # the forward's stderr, each line with its time: warnings from before the server listened are expected
            lines: list[tuple[float, str]] = []
            reader = threading.Thread(target=_collect, args=(forward, lines), daemon=True)
            reader.start()
            page = _first_get(url, job)
            serving = time.monotonic()
            assert f"job {job['slurm_job_id']}" in page
            # two connections held open all along (a browser's keep-alive, a notebook's websocket):
            # one is used at the end, the other stays idle until the job has ended
            used_late = socket.create_connection(("127.0.0.1", local), timeout=30)
            idle = socket.create_connection(("127.0.0.1", local), timeout=30)

            r = run("submit", "fwshort.yaml", "--site", "onesession", "--json")
            assert r.returncode == 0, r.stderr
            short = json.loads(r.stdout)["jobs"][0]["id"]
            jobs.append(short)
            started = time.monotonic()
            with ThreadPoolExecutor(4) as side:
                # a long command on the one session channel, and polling, while requests go through
                follow = side.submit(run, "logs", short, "--follow", timeout=120)
                wait = side.submit(run, "wait", short, timeout=120)
                sequential, slowest = [], 0.0
                for _ in range(100):
                    one = time.monotonic()
                    sequential.append(_get(url))
                    slowest = max(slowest, time.monotonic() - one)
                with ThreadPoolExecutor(10) as pool:
                    parallel = list(pool.map(lambda _: _get(url), range(20)))
                polls = [run("status", job["id"], "--json") for _ in range(3)]
                requests_done = time.monotonic() - started
                follow_r, wait_r = follow.result(), wait.result()
            assert sequential == [page] * 100
            assert parallel == [page] * 20
            for poll in polls:
                assert poll.returncode == 0, poll.stderr
                assert json.loads(poll.stdout)["jobs"][0]["state"] == "RUNNING"
            assert wait_r.returncode == 0, wait_r.stderr
            assert follow_r.returncode == 0, follow_r.stderr
            assert follow_r.stdout.splitlines() == [f"line {i}" for i in range(1, 7)], follow_r.stdout
            # and the forward still serves once the other job has ended, on a new connection and
            # on the one held since the start
            assert _get(url) == page
            used_late.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            assert _read_all(used_late).endswith(page.encode())
            # the server's job ends: the forward sees it at its next poll and stops by itself,
            # though a connection is still open through it
            assert run("cancel", job["id"]).returncode == 0
            ended = time.monotonic()
            code = forward.wait(timeout=60)
            stopped_after = time.monotonic() - ended
            reader.join(timeout=10)
            err = "".join(line for at, line in lines)
            late = "".join(line for at, line in lines if at > serving)
            forward = None
            idle.close()
            logins = server.connections()  # before the clean-up below
        finally:
            if forward is not None:
                _stop(forward)
            aif(["cancel", *jobs], env, tmp_path, timeout=120)
            if persist != "0":
                kill_agents(tmp_path / "home")
        sshd_log = server.log.read_text(errors="replace")
    outputs = "\n".join(p.stderr for p in (*polls, wait_r, follow_r)) + late
    print(
        f"\nMaxSessions 1, AIFACTORY_PERSIST={persist}: 122 requests + 3 status + wait + logs --follow "
        f"in {requests_done:.1f} s (slowest request {slowest * 1000:.0f} ms); "
        f"{commands} aifactory commands, {logins} login(s); "
        f"sshd 'no more sessions': {sshd_log.count('no more sessions')}; forward stopped "
        f"{stopped_after:.1f} s after its job ended"
    )
    assert code == 4 and "ended (CANCELLED" in err and "Traceback" not in err, err
    assert stopped_after < 30, f"the forward stopped {stopped_after:.1f} s after its job ended"
    assert "refused" not in outputs.lower() and "could not be forwarded" not in outputs, outputs
    assert logins == (1 if persist != "0" else commands), sshd_log[-3000:]
