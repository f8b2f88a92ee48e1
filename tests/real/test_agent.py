"""The connection agent against real SSH: the test bed's sshd (127.0.0.1:2222, Slurm behind it) and,
for an MFA prompt and a server that goes away, a small paramiko server started in the test.

Every test gets its own AIFACTORY_HOME (so its own agents) and kills whatever agent is left in it."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import secrets
import select
import signal
import statistics
import subprocess
import sys
import tarfile
import termios
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from aifactory_cli.errors import EXIT_REMOTE, AuthError, HostKeyError, RemoteError
from aifactory_cli.transport import and_then
from aifactory_cli.transport.agent.client import AgentTransport, make_transport
from aifactory_cli.transport.ssh.connection import SshTransport
from aifactory_cli.transport.ssh.settings import SshSettings
from tests.real.conftest import TESTBED_USER
from tests.real.fake_sshd import FakeServer, LoginNode, write_key

pytestmark = pytest.mark.real

MB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]


# --- agent processes -------------------------------------------------------------------------------------


def agent_pids(home: Path) -> list[int]:
    """Live (not zombie) `python -m aifactory_cli.transport.agent.daemon` processes whose socket is under `home`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        ours = any(str(home).encode() in a for a in cmdline)
        if b"aifactory_cli.transport.agent.daemon" in cmdline and ours and state != "Z":
            pids.append(int(entry.name))
    return pids


def kill_agents(home: Path) -> list[int]:
    """Stop the agents under `home`: remove their sockets (they exit), then SIGKILL what is left."""
    for sock in (home / "state" / "agents").glob("*.sock"):
        sock.unlink(missing_ok=True)
    wait_for(lambda: not agent_pids(home), 3)
    pids = agent_pids(home)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not agent_pids(home), 5)
    return pids


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap()
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_ssh_env: Path) -> Iterator[Path]:
    """A private AIFACTORY_HOME (hence agents dir) and an empty ssh_config; no agent outlives the test."""
    home = tmp_path / "home"
    monkeypatch.setenv("AIFACTORY_HOME", str(home))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO / "src"), str(REPO)) if p))
    yield home
    kill_agents(home)  # tests stop their agents; this is for the ones that failed half-way
    assert not agent_pids(home)


@pytest.fixture
def settings(testbed_ssh_settings: SshSettings, home: Path) -> SshSettings:
    return testbed_ssh_settings


def agent(settings: SshSettings, persist: float = 60.0, interactive: bool = False) -> AgentTransport:
    tr = make_transport(settings, site="testbed", interactive=interactive, persist=persist)
    assert isinstance(tr, AgentTransport)
    return tr


def stop(tr: AgentTransport) -> None:
    """Stop the agent (removing its socket makes it exit) and wait for its process."""
    tr.close()
    tr.socket_path.unlink(missing_ok=True)
    for proc in tr._procs:
        proc.wait(10)


CLIENT = r"""
import json, sys, time
t0 = time.perf_counter()
from aifactory_cli.transport.ssh.settings import SshSettings
from aifactory_cli.transport.agent.client import make_transport
args = json.loads(sys.argv[1])
tr = make_transport(SshSettings(**args["settings"]), site="testbed", interactive=False, persist=args["persist"])
out = []
for command in args["commands"]:
    r = tr.run(command)
    out.append([r.rc, r.stdout, r.stderr])
reads = [len(tr.read_bytes(path, offset)) for path, offset in args.get("reads", [])]
print(json.dumps({
    "results": out, "reads": reads, "opened": tr.connections_opened, "commands": tr.commands_run, "pid": tr.agent_pid,
    "user": tr.username, "paramiko": "paramiko" in sys.modules,
    "ssh_module": "aifactory_cli.transport.ssh.connection" in sys.modules, "seconds": time.perf_counter() - t0,
}))
tr.close()
"""


def cli_process(
    settings: SshSettings, commands: list[str], persist: float = 60.0, reads: Sequence[tuple[str, int]] = ()
) -> subprocess.Popen[str]:
    """A CLI-like process that runs `commands` (then `read_bytes` of `reads`) through the site's agent
    and prints what it saw."""
    arg = json.dumps(
        {"settings": settings.model_dump(mode="json"), "commands": commands, "persist": persist, "reads": reads}
    )
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT, arg], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def cli_result(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.fixture
def remote_dir(settings: SshSettings) -> Iterator[str]:
    path = f"aifactory-test-agent/{secrets.token_hex(6)}"
    with SshTransport(settings, site="testbed", interactive=False) as ssh:
        assert ssh.run(["mkdir", "-p", path]).ok
        yield path
        ssh.run(["rm", "-rf", path])


# --- starting and reusing -------------------------------------------------------------------------------------


def test_first_command_starts_the_agent_and_another_process_reuses_it(settings: SshSettings, home: Path) -> None:
    tr = agent(settings)
    r = tr.run("echo out; echo err >&2; exit 3")
    assert (r.rc, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert tr.started_agent and tr.connections_opened == 1 and tr.commands_run == 1
    assert tr.username == TESTBED_USER
    pid = tr.agent_pid
    assert pid is not None and agent_pids(home) == [pid]
    assert tr.socket_path.parent == home / "state" / "agents"
    assert tr.socket_path.stat().st_mode & 0o777 == 0o600
    assert tr.socket_path.parent.stat().st_mode & 0o777 == 0o700
    assert tr.run(["printf", "%s|", "a b", "$HOME", "'q'"]).stdout == "a b|$HOME|'q'|"
    assert tr.connections_opened == 1

    seen = cli_result(cli_process(settings, ["echo again", "id -un"]))
    assert seen["results"] == [[0, "again\n", ""], [0, f"{TESTBED_USER}\n", ""]]
    assert seen["opened"] == 0 and seen["commands"] == 2  # no login of its own
    assert seen["pid"] == pid and seen["user"] == TESTBED_USER
    assert seen["paramiko"] is False and seen["ssh_module"] is False
    assert agent_pids(home) == [pid]
    tr.close()
    tr.connect()  # a new connection to the agent: a fresh hello
    assert tr.agent_info["agent_connections_opened"] == 1  # one SSH login for everything
    stop(tr)
    assert not agent_pids(home)


def test_concurrent_processes_share_one_agent(settings: SshSettings, home: Path, remote_dir: str) -> None:
    tr = agent(settings)
    tr.connect()
    pid = tr.agent_pid
    assert tr.run(f"head -c 1500000 /dev/zero > {remote_dir}/f").ok
    reads = [(f"{remote_dir}/f", 0), (f"{remote_dir}/f", 1_000_000)]  # SFTP from several clients at once
    procs = [cli_process(settings, [f"echo {i}-{j}; sleep 0.0{j}" for j in range(5)], reads=reads) for i in range(10)]
    results = [cli_result(p, timeout=120) for p in procs]
    for i, seen in enumerate(results):
        assert [r[1] for r in seen["results"]] == [f"{i}-{j}\n" for j in range(5)]
        assert seen["reads"] == [1_500_000, 500_000]
        assert seen["opened"] == 0 and seen["pid"] == pid
    tr.close()
    tr.connect()
    assert tr.agent_info["agent_connections_opened"] == 1
    assert tr.agent_info["agent_commands_run"] >= 50
    assert agent_pids(home) == [pid]
    stop(tr)


def test_concurrent_cold_start_starts_one_agent(settings: SshSettings, home: Path) -> None:
    procs = [cli_process(settings, ["echo hi"]) for _ in range(6)]
    results = [cli_result(p, timeout=120) for p in procs]
    assert sum(r["opened"] for r in results) == 1  # one of them started the agent, the others waited for it
    assert len({r["pid"] for r in results}) == 1
    assert len(agent_pids(home)) == 1


# --- streams and files ---------------------------------------------------------------------------------------


def test_streamed_stdin_20mb(settings: SshSettings) -> None:
    sent = [0]

    def writer(sink: BinaryIO) -> None:
        block = b"x" * MB
        for _ in range(20):
            sink.write(block)
            sent[0] += len(block)

    tr = agent(settings)
    r = tr.run("wc -c", stdin=writer)
    assert r.ok, r.stderr
    assert r.stdout.strip() == str(20 * MB) and sent[0] == 20 * MB
    r = tr.run("sha256sum", stdin=bytes(range(256)) * 100)
    assert r.stdout.split()[0] == __import__("hashlib").sha256(bytes(range(256)) * 100).hexdigest()
    stop(tr)


def test_stdin_not_read_and_writer_errors(settings: SshSettings) -> None:
    tr = agent(settings)

    def big(sink: BinaryIO) -> None:
        for _ in range(50):
            sink.write(b"y" * MB)

    r = tr.run("head -c 5", stdin=big, timeout=60)
    assert (r.rc, r.stdout) == (0, "yyyyy")

    def failing(sink: BinaryIO) -> None:
        sink.write(b"abc")
        raise OSError("local file vanished")

    with pytest.raises(OSError, match="vanished"):
        tr.run("cat > /dev/null", stdin=failing)
    assert tr.run("echo ok").stdout == "ok\n"
    start = time.monotonic()
    with pytest.raises(RemoteError, match="timed out"):
        tr.run("sleep 20", timeout=0.5)
    assert time.monotonic() - start < 5
    assert tr.run("echo still").stdout == "still\n"
    tr.close()
    tr.connect()
    assert tr.agent_info["agent_connections_opened"] == 1
    stop(tr)


def test_timeout_while_sending_input(settings: SshSettings) -> None:
    tr = agent(settings)

    def endless(sink: BinaryIO) -> None:
        while True:
            sink.write(b"z" * MB)

    start = time.monotonic()
    with pytest.raises(RemoteError, match="timed out"):
        tr.run("sleep 20", stdin=endless, timeout=1)
    assert time.monotonic() - start < 10
    assert tr.run("echo fine").stdout == "fine\n"
    stop(tr)


UPLOADER = r"""
import json, sys
from aifactory_cli.transport.ssh.settings import SshSettings
from aifactory_cli.transport.agent.client import make_transport
args = json.loads(sys.argv[1])
tr = make_transport(SshSettings(**args["settings"]), site="testbed", interactive=False, persist=60)

def endless(sink):
    print("sending", flush=True)
    while True:
        sink.write(b"u" * 65536)

tr.run(args["command"], stdin=endless)
"""


def test_client_killed_while_sending_input(settings: SshSettings, home: Path, remote_dir: str) -> None:
    tr = agent(settings)
    tr.connect()
    target = f"{remote_dir}/partial"
    arg = json.dumps({"settings": settings.model_dump(mode="json"), "command": f"cat > {target}"})
    proc = subprocess.Popen([sys.executable, "-c", UPLOADER, arg], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "sending\n"
    time.sleep(1)
    proc.kill()  # like Ctrl-C / a killed CI job, in the middle of an upload
    proc.wait()

    def size() -> int:
        return int(tr.run(["stat", "-c", "%s", target]).stdout)

    # the agent notices the dead client and stops the remote `cat`: wait until the file stops growing
    deadline = time.monotonic() + 20
    last = size()
    while True:
        time.sleep(1)
        now = size()
        if now == last:
            break
        assert time.monotonic() < deadline, f"{target} still grows 20 s after its client was killed"
        last = now
    time.sleep(1)
    assert size() == now > 0  # the remote command was stopped with its client
    assert tr.run("echo alive").stdout == "alive\n"
    assert agent_pids(home) == [tr.agent_pid]
    stop(tr)


def test_files(settings: SshSettings, remote_dir: str) -> None:
    tr = agent(settings)
    path = f"{remote_dir}/sub.txt"
    data = b"0123456789" * 1000
    assert tr.run(["sh", "-c", 'cat > "$1"', "sh", path], stdin=data).ok
    assert tr.read_bytes(path) == data
    assert tr.read_bytes(path, offset=9995) == b"56789"
    assert tr.read_bytes(path, offset=len(data)) == b""
    assert tr.read_bytes(f"~/{path}", offset=len(data) + 10) == b""
    with pytest.raises(FileNotFoundError):
        tr.read_bytes(f"{remote_dir}/nope.log", offset=100)
    assert tr.run(f"head -c 3000000 /dev/urandom > {remote_dir}/big.bin").ok
    whole = tr.read_bytes(f"{remote_dir}/big.bin")
    big = tr.read_bytes(f"{remote_dir}/big.bin", offset=1000)
    assert len(big) == 2_999_000 and whole[1000:] == big
    digest = tr.run(f"sha256sum < {remote_dir}/big.bin").stdout.split()[0]
    assert digest == __import__("hashlib").sha256(whole).hexdigest()
    stop(tr)


def test_get_tar(settings: SshSettings, remote_dir: str, tmp_path: Path) -> None:
    tr = agent(settings)
    setup = and_then(
        ["cd", remote_dir],
        "mkdir -p out",
        "echo hello > stdout.log",
        "printf x > 'out/a b.txt'",
        "head -c 2000000 /dev/urandom > out/big.bin",
    )
    assert tr.run(setup).ok
    files = ["stdout.log", "out/a b.txt", "out/big.bin"]
    archive = tmp_path / "fetch.tar"
    seen: list[int] = []
    tr.get_tar(remote_dir, files, archive, progress=seen.append)
    assert sum(seen) == archive.stat().st_size and len(seen) > 1
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == sorted(files)
        tar.extractall(tmp_path / "x", filter="data")
    assert (tmp_path / "x" / "stdout.log").read_text() == "hello\n"
    assert (tmp_path / "x" / "out" / "big.bin").stat().st_size == 2_000_000
    with pytest.raises(RemoteError, match="nope"):
        tr.get_tar(remote_dir, ["nope"], tmp_path / "bad.tar")
    assert tr.run("echo after").stdout == "after\n"
    stop(tr)


def test_sbatch_parsable(settings: SshSettings, remote_dir: str) -> None:
    tr = agent(settings)
    script = b"#!/bin/bash\n#SBATCH --time=1\n#SBATCH --partition=debug\necho hello\n"
    line = and_then(["cd", remote_dir], ["sbatch", "--parsable", "--job-name=aif-agent-test"])
    r = tr.run(line, stdin=script)
    assert r.ok, r.stderr
    assert r.stdout.strip().split(";")[0].isdigit()
    stop(tr)


# --- lifetime -------------------------------------------------------------------------------------------------


def test_idle_exit_after_persist(settings: SshSettings, home: Path) -> None:
    tr = agent(settings, persist=2)
    assert tr.run("true").ok
    proc = tr._procs[0]
    time.sleep(2.5)
    assert proc.poll() is None  # a connected client keeps it up
    assert tr.run("true").ok and tr.connections_opened == 1
    tr.close()
    closed = time.monotonic()
    proc.wait(30)
    waited = time.monotonic() - closed
    assert 1.8 < waited < 15, waited  # exits after persist=2 s without a client (slack for a slow CI machine)
    assert not tr.socket_path.exists()
    assert "no client for 2 s" in tr.log_path.read_text()
    # the next command starts a new one
    tr2 = agent(settings, persist=2)
    assert tr2.run("echo new").stdout == "new\n" and tr2.connections_opened == 1
    stop(tr2)


def test_removing_the_socket_stops_the_agent(settings: SshSettings, home: Path) -> None:
    tr = agent(settings)
    tr.connect()
    proc = tr._procs[0]
    tr.socket_path.unlink()
    proc.wait(5)
    assert "socket was removed" in tr.log_path.read_text()
    assert tr.run("echo back").stdout == "back\n"  # pooled connection is dead: a new agent
    assert tr.connections_opened == 2 and len(tr._procs) == 2
    stop(tr)


def test_reconnects_after_the_connection_dropped(settings: SshSettings) -> None:
    tr = agent(settings)
    assert tr.run("true").ok
    with pytest.raises(RemoteError, match="outcome is unknown"):
        tr.run("kill -9 $PPID; sleep 5")  # kills our sshd session: the connection drops
    r = tr.run("echo back")
    assert (r.rc, r.stdout) == (0, "back\n")
    assert tr.connections_opened == 2  # the agent logged in again, for this client
    stop(tr)


# --- errors: same class and message as SshTransport, no agent left behind ---------------------------------


def _ssh_error(settings: SshSettings) -> RemoteError:
    with pytest.raises(RemoteError) as info:
        SshTransport(settings, site="testbed", interactive=False).run("true")
    return info.value


def _agent_error(settings: SshSettings, home: Path) -> RemoteError:
    tr = agent(settings)
    with pytest.raises(RemoteError) as info:
        tr.run("true")
    assert not agent_pids(home)
    assert not tr.socket_path.exists()
    assert tr.connections_opened == 0
    return info.value


def test_unknown_host_key(settings: SshSettings, home: Path, tmp_path: Path, testbed_client: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    bad = settings.model_copy(update={"known_hosts": str(empty)})
    expected = _ssh_error(bad)
    got = _agent_error(bad, home)
    assert type(got) is HostKeyError and type(expected) is HostKeyError
    assert (got.message, got.hint, got.where) == (expected.message, expected.hint, expected.where)
    assert (testbed_client / "host_fingerprint").read_text().strip() in got.message
    assert got.exit_code == EXIT_REMOTE
    assert empty.read_text() == ""


def test_dead_port(settings: SshSettings, home: Path) -> None:
    bad = settings.model_copy(update={"port": 1})
    expected = _ssh_error(bad)
    start = time.monotonic()
    got = _agent_error(bad, home)
    assert time.monotonic() - start < 15  # refused is final: no retry loop, no 60 s hang (slack for slow CI)
    assert type(got) is RemoteError and str(got) == str(expected)
    assert "127.0.0.1:1" in got.message and "refused" in got.message


def test_wrong_key(settings: SshSettings, home: Path, tmp_path: Path) -> None:
    bad = settings.model_copy(update={"identity_file": str(write_key(tmp_path / "id_other"))})
    expected = _ssh_error(bad)
    got = _agent_error(bad, home)
    assert type(got) is AuthError and str(got) == str(expected)


# --- a paramiko server: MFA on the user's terminal, a server that goes away -----------------------------------


@pytest.fixture
def fake_server(tmp_path: Path, home: Path) -> Iterator[Any]:
    servers: list[FakeServer] = []

    def make(mfa: bool, banner: bool = False) -> FakeServer:
        where = tmp_path / f"fake{len(servers)}"
        where.mkdir()
        servers.append(FakeServer(where, mfa, banner))
        return servers[-1]

    yield make
    for s in servers:
        if not s.stopped.is_set():
            s.stop()


def _read_until(fd: int, wanted: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_mfa_prompt_reaches_the_terminal_and_the_agent_outlives_it(fake_server: Any, home: Path) -> None:
    server = fake_server(mfa=True)
    arg = json.dumps({"settings": server.settings.model_dump(mode="json"), "commands": ["echo in"], "persist": 60})
    code = CLIENT.replace("interactive=False", "interactive=None")  # decided by the terminal, as the CLI does
    master, slave = pty.openpty()

    def controlling_tty() -> None:  # the pty is the process's terminal, as for a person at a shell
        import fcntl

        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-c", code, arg],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=controlling_tty,
    )
    os.close(slave)
    try:
        shown = _read_until(master, b"Verification code: ", 60)
        assert b"Verification code: " in shown, shown
        assert b"FakeHPC MFA" in shown
        os.write(master, b"123456\n")
        rest = _read_until(master, b"}", 60)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, shown + rest
    seen = json.loads(rest[rest.index(b"{") :].decode())
    assert seen["results"] == [[0, "in\n", ""]] and seen["opened"] == 1
    assert b"123456" not in rest  # not echoed
    # the terminal goes away (SIGHUP to its session): the agent is in its own session and has let go of it
    os.close(master)
    pid = seen["pid"]
    assert agent_pids(home) == [pid]
    fds = [os.readlink(f) for f in Path(f"/proc/{pid}/fd").iterdir() if f.is_symlink()]
    assert not any(f.startswith("/dev/pts") for f in fds), fds
    assert os.getsid(pid) == pid
    time.sleep(0.3)
    # a later command needs no login, hence no prompt, and no terminal
    later = cli_result(cli_process(server.settings, ["echo again"]))
    assert later["results"] == [[0, "again\n", ""]] and later["opened"] == 0 and later["pid"] == pid
    assert server.logins == 1


def test_mfa_prompt_without_terminal_is_an_auth_error(fake_server: Any, home: Path) -> None:
    server = fake_server(mfa=True)
    expected = _ssh_error(server.settings)
    got = _agent_error(server.settings, home)
    assert type(got) is AuthError and str(got) == str(expected)
    assert "Verification code" in got.message and "no terminal" in got.message


def test_noisy_login_shell_is_counted_through_the_agent(fake_server: Any, home: Path) -> None:
    server = fake_server(mfa=False, banner=True)
    tr = make_transport(server.settings, site="testbed", interactive=False, persist=60)
    assert isinstance(tr, AgentTransport)
    r = tr.run("echo out; echo err >&2")
    assert (r.rc, r.stdout, r.stderr) == (0, "out\n", "err\n")
    assert r.noise_bytes == len(LoginNode.BANNER) + len(LoginNode.STDERR_NOISE)  # cut off by the agent, counted
    stop(tr)


def test_site_gone_the_agent_reports_and_exits(fake_server: Any, home: Path) -> None:
    server = fake_server(mfa=False)
    tr = make_transport(server.settings, site="testbed", interactive=False, persist=60)
    assert isinstance(tr, AgentTransport)
    assert tr.run("echo up").stdout == "up\n"
    proc = tr._procs[0]
    server.stop()
    with pytest.raises(RemoteError) as info:
        tr.run("echo down")
    # the agent could not reconnect, said so, and left; a fresh agent was tried once: its login error
    assert type(info.value) is RemoteError
    assert info.value.message.startswith(f"connection refused by 127.0.0.1:{server.port}"), info.value.message
    proc.wait(10)
    assert "could not reopen" in tr.log_path.read_text()
    assert not agent_pids(home) and not tr.socket_path.exists()


# --- timing (printed; run with -s to see) -----------------------------------------------------------------------


@pytest.mark.slow
def test_warm_agent_reuses_its_login_where_cold_ssh_logs_in(settings: SshSettings, home: Path) -> None:
    """A CLI-like `python -c` doing make_transport(...).run(...): through a warm agent every process
    reuses the agent's one SSH connection (sshd sees the same client port in $SSH_CONNECTION, and
    nobody logs in or imports paramiko); a plain SshTransport logs in each time. The timings are
    printed (run with -s), not asserted: they depend on the machine."""
    data = json.dumps(settings.model_dump(mode="json"))
    code = (
        "import json, sys\n"
        "from aifactory_cli.transport.ssh.settings import SshSettings\n"
        "from aifactory_cli.transport.agent.client import make_transport\n"
        "tr = make_transport(SshSettings(**json.loads(sys.argv[1])), site='testbed', interactive=False,"
        " persist=float(sys.argv[2]))\n"
        "r = tr.run('echo $SSH_CONNECTION')\n"
        "print(json.dumps({'rc': r.rc, 'conn': r.stdout.strip(), 'opened': tr.connections_opened,"
        " 'paramiko': 'paramiko' in sys.modules}))\n"
        "tr.close()\n"
    )

    def timed(persist: float) -> tuple[float, dict[str, Any]]:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code, data, str(persist)], check=True, capture_output=True)
        seconds = time.perf_counter() - t0
        seen: dict[str, Any] = json.loads(out.stdout)
        assert seen["rc"] == 0 and seen["conn"], seen
        return seconds, seen

    tr = agent(settings)
    tr.connect()  # warm
    runs = 10
    cold: list[tuple[float, dict[str, Any]]] = []
    warm: list[tuple[float, dict[str, Any]]] = []
    for _ in range(runs):  # interleaved, so that machine noise hits both alike
        cold.append(timed(0))
        warm.append(timed(60))
    # sshd's view: the warm processes all came over the agent's one TCP connection, the cold ones
    # each over their own (SSH_CONNECTION = client address and port, server address and port)
    assert len({seen["conn"] for _, seen in warm}) == 1, [seen["conn"] for _, seen in warm]
    assert len({seen["conn"] for _, seen in cold}) == runs, [seen["conn"] for _, seen in cold]
    assert all(seen["opened"] == 0 and not seen["paramiko"] for _, seen in warm), warm
    assert all(seen["opened"] == 1 and seen["paramiko"] for _, seen in cold), cold
    tr.close()
    tr.connect()  # a new connection to the agent, a fresh hello: the agent's own counters
    assert tr.agent_info["agent_connections_opened"] == 1
    assert tr.agent_info["agent_commands_run"] >= runs
    tr.socket_path.unlink()
    first, _ = timed(60)  # starting the agent (it logs in) on the way
    print(
        f"\nrun(['true']) in a fresh process, median of {runs}: cold SshTransport "
        f"{statistics.median(t for t, _ in cold) * 1000:.0f} ms, warm agent "
        f"{statistics.median(t for t, _ in warm) * 1000:.0f} ms; starting the agent {first * 1000:.0f} ms"
    )
    stop(tr)
