"""`aifactory forward` on the test bed: a job runs a real HTTP server (python3 -m http.server) on its
$AIF_PORT; `aifactory forward JOB --local-port 28080` runs in the background; requests through it
reach the server (100 one after another, 20 at once); Ctrl-C (SIGINT) ends it with exit 0 and
frees the port. Through the connection agent, everything (submit, forward, every request, status
polls) costs one SSH login, counted at a TCP proxy in front of the bed's sshd. Without the agent,
the same over a plain connection, through a jump host, and the errors: a local port in use, a
pending job with --no-wait, an ended job. Two jobs pinned to one node get two ports, and each
forward reaches its own job."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from aifactory_cli.errors import TunnelRefused
from aifactory_cli.sites.profile import SshSettings
from aifactory_cli.transport.ssh.connection import SshTransport
from tests.conftest import REPO, TEST_PROFILES
from tests.real.bedjobs import BED_PROFILES, aif, bed_env
from tests.real.conftest import (
    TESTBED_ACCOUNT,
    TESTBED_CLIENT,
    TESTBED_JUMP_PORT,
    TESTBED_KEY,
    TESTBED_KNOWN_HOSTS,
    TESTBED_SSH_PORT,
    TESTBED_USER,
)
from tests.real.faultproxy import FaultProxy
from tests.real.test_agent import kill_agents

pytestmark = pytest.mark.real

SERVER = """name: fwhttp
run: |
  mkdir -p site && printf 'hello from %s job %s\\n' "$SLURMD_NODENAME" "$SLURM_JOB_ID" > site/index.html
  cd site && exec python3 -m http.server "$AIF_PORT" --bind "$AIF_HOST"
resources: {nodes: 1, time: 5m}
"""
LOCAL_PORT = 28080


@dataclass
class Bed:
    env: dict[str, str]
    cwd: Path
    proxy: FaultProxy
    agent_job: dict  # on site fwagent: through the agent, behind the counting proxy
    plain_job: dict  # on lumi-bed: a plain connection per command (persist 0)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    tmp = tmp_path_factory.mktemp("forward")
    proxy = FaultProxy(("127.0.0.1", TESTBED_SSH_PORT))
    profiles = tmp / "profiles"
    profiles.mkdir()
    pin = (TESTBED_CLIENT / "host_fingerprint").read_text().strip()
    (tmp / "known_hosts").write_text("")
    (profiles / "fwagent.yaml").write_text(
        f"extends: lumi-bed\nssh: {{port: {proxy.port}, known_hosts: {tmp / 'known_hosts'}, "
        f"host_key_fingerprints: ['{pin}'], persist: 120}}\n"
    )
    env = bed_env(tmp)
    env.update(AIFACTORY_PROFILES=os.pathsep.join(map(str, (profiles, BED_PROFILES, TEST_PROFILES))))
    env["AIFACTORY_ACCOUNT"] = TESTBED_ACCOUNT
    (tmp / "fwhttp.yaml").write_text(SERVER)
    jobs = {}
    for site in ("fwagent", "lumi-bed"):
        r = aif(["submit", "fwhttp.yaml", "--site", site, "--json"], env, tmp, timeout=120)
        assert r.returncode == 0, r.stderr
        jobs[site] = json.loads(r.stdout)["jobs"][0]
    try:
        yield Bed(env, tmp, proxy, jobs["fwagent"], jobs["lumi-bed"])
    finally:
        aif(["cancel", *(j["id"] for j in jobs.values())], env, tmp, timeout=120)
        kill_agents(tmp / "home")
        proxy.close()


def _forward(bed: Bed, *args: str) -> tuple[subprocess.Popen[str], str]:
    """`aifactory forward ...` in the background, as a user runs it; returns it and the URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "aifactory_cli", "forward", *args],
        env=bed.env,
        cwd=str(bed.cwd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url:
        proc.wait(30)
        pytest.fail(f"forward printed no URL: exit {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
    return proc, url


def _get(url: str, timeout: float = 20) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        assert reply.status == 200
        return reply.read().decode()


def _first_get(url: str, job: dict) -> str:
    """The server may still be starting when the forward is: retry for a while."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return _get(url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> tuple[int, str]:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err


def _port_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port: a new forward could listen there (connections that just
    ended may linger in TIME_WAIT, as for any server: SO_REUSEADDR, as forward sets it)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_forward_through_the_agent_survives_many_requests_and_costs_one_login(bed: Bed) -> None:
    job = bed.agent_job
    proc, url = _forward(bed, job["id"], "--local-port", str(LOCAL_PORT))
    try:
        assert url == f"http://127.0.0.1:{LOCAL_PORT}/"
        page = _first_get(url, job)
        assert f"job {job['slurm_job_id']}" in page and "hello from nid" in page

        started = time.monotonic()
        pages = [_get(url) for _ in range(100)]
        sequential = time.monotonic() - started
        assert pages == [page] * 100

        started = time.monotonic()
        with ThreadPoolExecutor(20) as pool:
            parallel = list(pool.map(lambda _: _get(url), range(20)))
        at_once = time.monotonic() - started
        assert parallel == [page] * 20

        for _ in range(3):  # status polls while forwarding, through the same agent
            r = aif(["status", job["id"], "--json"], bed.env, bed.cwd, timeout=60)
            assert r.returncode == 0 and json.loads(r.stdout)["jobs"][0]["state"] == "RUNNING", r.stderr
        print(
            f"\nforward via agent: 100 sequential in {sequential:.2f} s ({sequential * 10:.1f} ms each), "
            f"20 parallel in {at_once:.2f} s, SSH logins {bed.proxy.opened}"
        )
    finally:
        code, err = _stop(proc)
    assert code == 0, err
    forwarded = re.search(r"forward stopped \((\d+) connection\(s\) forwarded\)", err)
    assert forwarded and int(forwarded.group(1)) >= 121, err  # and the first one's retries
    assert "Traceback" not in err
    assert _port_free(LOCAL_PORT)
    # submit + forward + 122 connections + 3 status polls: the agent's one login
    assert bed.proxy.opened == 1


def test_tunnel_through_a_jump_host(bed: Bed, testbed_client: Path, isolated_ssh_env: Path) -> None:
    record = (Path(bed.plain_job["workdir"]) / "aif_port").read_text().split()
    host, port = record[0], int(record[1])
    settings = SshSettings(
        host="127.0.0.1",
        port=TESTBED_SSH_PORT,
        user=TESTBED_USER,
        identity_file=str(TESTBED_KEY),
        known_hosts=str(TESTBED_KNOWN_HOSTS),
        proxy_jump=f"{TESTBED_USER}@127.0.0.1:{TESTBED_JUMP_PORT}",
    )
    with SshTransport(settings, site="testbed", interactive=False) as tr:
        deadline = time.monotonic() + 30
        while True:
            try:
                tunnel = tr.open_tunnel(host, port)
                break
            except TunnelRefused:  # the job's server is still starting
                assert time.monotonic() < deadline
                time.sleep(0.3)
        tunnel.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        reply = b""
        while chunk := tunnel.recv(65536):
            reply += chunk
        tunnel.close()
        assert reply.startswith(b"HTTP/1.0 200") and b"hello from nid" in reply
        with pytest.raises(TunnelRefused, match=f"{host}:1"):
            tr.open_tunnel(host, 1)  # nothing listens there
        assert tr.connections_opened == 1 and len(tr._jumps) == 1


def test_forward_command_through_a_jump_host_and_the_agent(bed: Bed) -> None:
    """`aifactory forward` on a site reached through a jump host (ssh.proxy_jump), with the agent."""
    profiles = Path(bed.env["AIFACTORY_PROFILES"].split(os.pathsep)[0])
    (profiles / "fwjump.yaml").write_text(
        f"extends: lumi-bed\nssh: {{proxy_jump: '{TESTBED_USER}@127.0.0.1:{TESTBED_JUMP_PORT}', persist: 120}}\n"
    )
    r = aif(["submit", "fwhttp.yaml", "--site", "fwjump", "--json"], bed.env, bed.cwd, timeout=120)
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)["jobs"][0]
    try:
        proc, url = _forward(bed, job["id"], "--local-port", str(_free_port()))
        try:
            assert f"job {job['slurm_job_id']}" in _first_get(url, job)
        finally:
            code, err = _stop(proc)
        assert code == 0 and f"of job {job['id']} on fwjump" in err, err
    finally:
        aif(["cancel", job["id"]], bed.env, bed.cwd, timeout=60)


def test_forward_over_a_plain_connection_and_its_errors(bed: Bed) -> None:
    job = bed.plain_job
    port = int((Path(job["workdir"]) / "aif_port").read_text().split()[1])
    proc, url = _forward(bed, job["id"])  # no --local-port: the job's port number, free here
    try:
        assert url == f"http://127.0.0.1:{port}/"
        assert "hello from nid" in _first_get(url, job)

        # that port is taken now: a second forward asking for it is refused, and says what to do
        r = aif(["forward", job["id"], "--local-port", str(port)], bed.env, bed.cwd, timeout=60)
        assert r.returncode == 2 and f"127.0.0.1:{port}" in r.stderr and "in use" in r.stderr, r.stderr
        assert "--local-port" in r.stderr and "Traceback" not in r.stderr

        # a job that waits for this one is pending: --no-wait refuses (exit 4) and says why
        r = aif(["submit", "fwhttp.yaml", "--site", "lumi-bed", "--after", job["id"], "--json"], bed.env, bed.cwd, 60)
        assert r.returncode == 0, r.stderr
        pending = json.loads(r.stdout)["jobs"][0]
        r = aif(["forward", pending["id"], "--no-wait"], bed.env, bed.cwd, timeout=60)
        assert r.returncode == 4 and "has not started yet (PENDING" in r.stderr, r.stderr
    finally:
        code, err = _stop(proc, signal.SIGTERM)
    assert code == 0 and "forward stopped" in err, err
    assert _port_free(port)

    assert aif(["cancel", job["id"], pending["id"]], bed.env, bed.cwd, timeout=60).returncode == 0
    r = aif(["forward", job["id"]], bed.env, bed.cwd, timeout=60)
    assert r.returncode == 4 and "has ended (CANCELLED" in r.stderr and "nothing to forward" in r.stderr, r.stderr


def test_two_jobs_on_one_node_get_different_ports_and_each_forward_reaches_its_own(bed: Bed) -> None:
    """Two server jobs pinned to one node (slurm: {nodelist}): each picked its own AIF_PORT there,
    and a forward to each reaches that job's server, not the other's."""
    spec = SERVER.replace(
        "resources: {nodes: 1, time: 5m}", "resources: {nodes: 1, time: 5m}\nslurm: {nodelist: nid001000}"
    )
    (bed.cwd / "fwpair.yaml").write_text(spec.replace("name: fwhttp", "name: fwpair"))
    jobs = []
    procs: list[subprocess.Popen[str]] = []
    try:
        for _ in range(2):
            r = aif(["submit", "fwpair.yaml", "--site", "lumi-bed", "--json"], bed.env, bed.cwd, timeout=120)
            assert r.returncode == 0, r.stderr
            jobs.append(json.loads(r.stdout)["jobs"][0])
        pages = {}
        for job in jobs:
            proc, url = _forward(bed, job["id"], "--local-port", str(_free_port()))
            procs.append(proc)
            pages[job["slurm_job_id"]] = _first_get(url, job)
        records = [(Path(j["workdir"]) / "aif_port").read_text().split() for j in jobs]
        assert records[0][0] == records[1][0] == "nid001000", records  # one node
        assert records[0][1] != records[1][1], records  # two ports
        for slurm_id, page in pages.items():
            assert page == f"hello from nid001000 job {slurm_id}\n"
        print(f"\ntwo jobs on nid001000: ports {records[0][1]} and {records[1][1]}")
    finally:
        for proc in procs:
            _stop(proc)
        if jobs:
            aif(["cancel", *(j["id"] for j in jobs)], bed.env, bed.cwd, timeout=60)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


JUPYTER_VENV = Path(os.environ.get("TESTBED_JUPYTER_VENV", "/opt/aif-jupyter"))


def test_jupyterlab_reached_through_forward_with_its_token(bed: Bed) -> None:
    """examples/jupyter.yaml on the bed, with the JupyterLab that tests/testbed/start.sh installs from
    tests/testbed/jupyter-requirements.txt: forward prints the URL with the server's token; /api
    answers with it and refuses without it."""
    if not (JUPYTER_VENV / ".testbed-installed").is_file():
        pytest.skip(
            f"JupyterLab is not installed in {JUPYTER_VENV}: tests/testbed/start.sh installs it from "
            "tests/testbed/jupyter-requirements.txt, which failed or was not run here "
            "(log: /tmp/testbed/log/jupyter.out)"
        )
    text = (REPO / "examples" / "jupyter.yaml").read_text()
    (bed.cwd / "jupyter.yaml").write_text(text.replace('JUPYTER_ENV: ""', f"JUPYTER_ENV: {JUPYTER_VENV}"))
    started = time.monotonic()
    r = aif(["submit", "jupyter.yaml", "--site", "lumi-bed", "--json"], bed.env, bed.cwd, timeout=120)
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)["jobs"][0]
    proc, url = _forward(bed, job["id"])
    try:
        assert proc.stdout is not None
        while "?token=" not in url:  # the token is printed once the server has written it to its log
            assert time.monotonic() - started < 90, url
            url = proc.stdout.readline().strip()
        ready = time.monotonic() - started
        base, token = url.split("/lab?token=")
        status = json.loads(_get(f"{base}/api/status?token={token}"))
        assert "started" in status and status["kernels"] == 0
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(f"{base}/api/status")
        assert refused.value.code == 403
        assert "JupyterLab" in _get(url)
        print(f"\njupyter: submit -> token URL through forward in {ready:.1f} s")
    finally:
        code, err = _stop(proc)
        aif(["cancel", job["id"]], bed.env, bed.cwd, timeout=60)
    assert code == 0, err


TWO_NODES = """name: fw2node
run: |
  d="site-$SLURM_NODEID" && mkdir -p "$d"
  printf 'node %s is %s\\n' "$SLURM_NODEID" "$SLURMD_NODENAME" > "$d/index.html"
  cd "$d" && exec python3 -m http.server "$AIF_PORT" --bind "$SLURMD_NODENAME"
resources: {nodes: 2, time: 5m}
"""


def test_node_reaches_the_server_each_node_of_a_job_runs_on_its_aif_port(bed: Bed) -> None:
    """A 2-node job serves on AIF_PORT on each node (the bed's nodes have addresses of their own):
    `--node 1` reaches the second node's server, the default the first's."""
    (bed.cwd / "fw2node.yaml").write_text(TWO_NODES)
    r = aif(["submit", "fw2node.yaml", "--site", "lumi-bed", "--json"], bed.env, bed.cwd, timeout=120)
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)["jobs"][0]
    try:
        seen = {}
        for args in ((), ("--node", "1")):
            proc, url = _forward(bed, job["id"], *args)
            try:
                seen[args] = _first_get(url, job).strip()
            finally:
                assert _stop(proc)[0] == 0
        assert seen[()].startswith("node 0 is nid") and seen[("--node", "1")].startswith("node 1 is nid"), seen
        assert seen[()].split()[-1] != seen[("--node", "1")].split()[-1]  # two nodes, two servers
        r = aif(["forward", job["id"], "--node", "5"], bed.env, bed.cwd, timeout=60)
        assert r.returncode == 2 and "has no node '5'" in r.stderr, r.stderr
    finally:
        aif(["cancel", job["id"]], bed.env, bed.cwd, timeout=60)
