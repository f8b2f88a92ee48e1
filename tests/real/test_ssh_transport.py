"""SshTransport against real SSH servers: the test bed's sshd (login node 127.0.0.1:2222, jump host
:2223, Slurm behind it) and, for what the test bed's key-only sshd cannot do (MFA prompts, a noisy
login shell), a small paramiko server started in the test."""

from __future__ import annotations

import io
import json
import secrets
import socket
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from aifactory_cli.errors import EXIT_REMOTE, AuthError, HostKeyError, RemoteError
from aifactory_cli.transport import and_then
from aifactory_cli.transport.ssh.connection import SshTransport
from aifactory_cli.transport.ssh.settings import SshSettings
from tests.real.conftest import (
    TESTBED_JUMP_PORT,
    TESTBED_KNOWN_HOSTS,
    TESTBED_SSH_CONFIG,
    TESTBED_SSH_PORT,
    TESTBED_USER,
)
from tests.real.fake_sshd import FakeServer, LoginNode, write_key

pytestmark = pytest.mark.real

MB = 1024 * 1024


@pytest.fixture
def ssh(testbed_ssh_settings: SshSettings) -> Iterator[SshTransport]:
    tr = SshTransport(testbed_ssh_settings, site="testbed", interactive=False)
    yield tr
    tr.close()


@pytest.fixture
def remote_dir(ssh: SshTransport) -> Iterator[str]:
    """A fresh directory in the test user's home (relative path, as the backend uses)."""
    path = f"aifactory-test-ssh/{secrets.token_hex(6)}"
    assert ssh.run(["mkdir", "-p", path]).ok
    yield path
    ssh.run(["rm", "-rf", path])


def _settings(base: SshSettings, **changes: Any) -> SshSettings:
    return base.model_copy(update=changes)


def _transport(base: SshSettings, **changes: Any) -> SshTransport:
    return SshTransport(_settings(base, **changes), site="testbed", interactive=False)


# --- commands ------------------------------------------------------------------------------------


def test_run_returns_exact_output_and_exit_code(ssh: SshTransport) -> None:
    r = ssh.run("echo out; echo err >&2; exit 3")
    assert (r.rc, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert ssh.username == TESTBED_USER
    # nothing at all after the markers, and nothing before them (the test bed's shell is quiet)
    r = ssh.run("true")
    assert (r.rc, r.stdout, r.stderr, r.noise_bytes) == (0, "", "", 0)
    # no trailing newline, blank lines, marker-like text in the output are kept as they are
    r = ssh.run(["printf", "%s", "\n\nAIFACTORY-0123456789abcdef\nlast"])
    assert r.stdout == "\n\nAIFACTORY-0123456789abcdef\nlast"
    r = ssh.run(and_then(["cd", "/"], ["pwd"]))
    assert r.stdout == "/\n"


def test_argv_is_quoted(ssh: SshTransport) -> None:
    r = ssh.run(["printf", "%s|", "a b", "$HOME", "'q'", "; rm -rf x"])
    assert r.stdout == "a b|$HOME|'q'|; rm -rf x|"


def test_stdin_bytes(ssh: SshTransport) -> None:
    data = bytes(range(256)) * 100
    r = ssh.run("sha256sum", stdin=data)
    import hashlib

    assert r.stdout.split()[0] == hashlib.sha256(data).hexdigest()


def test_streamed_stdin_20mb(ssh: SshTransport) -> None:
    sent = [0]

    def writer(sink: BinaryIO) -> None:
        block = b"x" * MB
        for _ in range(20):
            sink.write(block)
            sent[0] += len(block)

    r = ssh.run("wc -c", stdin=writer)
    assert r.ok, r.stderr
    assert r.stdout.strip() == str(20 * MB) and sent[0] == 20 * MB


def test_stdin_not_read_by_the_command_does_not_hang(ssh: SshTransport) -> None:
    def writer(sink: BinaryIO) -> None:
        for _ in range(50):
            sink.write(b"y" * MB)

    r = ssh.run("head -c 5", stdin=writer, timeout=60)
    assert (r.rc, r.stdout) == (0, "yyyyy")


def test_stdin_writer_error_is_raised_and_the_connection_survives(ssh: SshTransport) -> None:
    def writer(sink: BinaryIO) -> None:
        sink.write(b"abc")
        raise OSError("local file vanished")

    with pytest.raises(OSError, match="vanished"):
        ssh.run("cat > /dev/null", stdin=writer)
    assert ssh.run("echo ok").stdout == "ok\n"
    assert ssh.connections_opened == 1


def test_large_stdout_and_stderr_together(ssh: SshTransport) -> None:
    r = ssh.run(
        "head -c 8000000 /dev/zero | tr '\\0' a; head -c 8000000 /dev/zero | tr '\\0' b >&2; "
        "head -c 100 /dev/zero | tr '\\0' c",
        timeout=120,
    )
    assert r.ok
    assert len(r.stdout) == 8_000_100 and r.stdout.endswith("c" * 100)
    assert r.stderr == "b" * 8_000_000


def test_timeout(ssh: SshTransport) -> None:
    start = time.monotonic()
    with pytest.raises(RemoteError, match="timed out"):
        ssh.run("sleep 20", timeout=0.5)
    assert time.monotonic() - start < 5
    assert ssh.run("echo still").stdout == "still\n"
    assert ssh.connections_opened == 1


def test_one_connection_for_many_commands(ssh: SshTransport, remote_dir: str) -> None:
    for i in range(50):
        assert ssh.run(["echo", str(i)]).stdout == f"{i}\n"
    assert ssh.run(["sh", "-c", 'printf x > "$1"', "sh", f"{remote_dir}/f"]).ok
    assert ssh.read_bytes(f"{remote_dir}/f") == b"x"  # SFTP on the same connection
    assert ssh.connections_opened == 1
    assert ssh.commands_run >= 51


def test_socket_has_tcp_nodelay_and_timings(ssh: SshTransport) -> None:
    ssh.run("true")
    assert ssh._transport is not None
    assert ssh._transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        ssh.run("true")
        times.append(time.perf_counter() - t0)
    assert ssh.connect_seconds is not None
    print(f"connect {ssh.connect_seconds * 1000:.1f} ms; run('true') median {statistics.median(times) * 1000:.1f} ms")


def test_sbatch_parsable(ssh: SshTransport, remote_dir: str) -> None:
    script = b"#!/bin/bash\n#SBATCH --time=1\n#SBATCH --partition=debug\necho hello\n"
    line = and_then(["cd", remote_dir], ["sbatch", "--parsable", "--job-name=aif-ssh-test"])
    r = ssh.run(line, stdin=script)
    assert r.ok, r.stderr
    assert r.stdout.strip().split(";")[0].isdigit()


# --- files ----------------------------------------------------------------------------------------


def write(ssh: SshTransport, path: str, data: bytes) -> None:
    assert ssh.run(["sh", "-c", 'cat > "$1"', "sh", path], stdin=data).ok


def test_read_bytes(ssh: SshTransport, remote_dir: str) -> None:
    path = f"{remote_dir}/sub.txt"
    data = b"0123456789" * 1000
    write(ssh, path, data)
    assert ssh.read_bytes(path) == data
    assert ssh.read_bytes(path, offset=9995) == b"56789"
    assert ssh.read_bytes(path, offset=len(data)) == b""
    assert ssh.read_bytes(path, offset=len(data) + 10) == b""
    # ~/ and $HOME/ paths mean the home directory
    write(ssh, path, b"new")
    assert ssh.read_bytes(f"~/{path}") == b"new"
    assert ssh.read_bytes(f"$HOME/{path}") == b"new"


def test_read_missing_file(ssh: SshTransport, remote_dir: str) -> None:
    with pytest.raises(FileNotFoundError):
        ssh.read_bytes(f"{remote_dir}/nope.log")
    with pytest.raises(FileNotFoundError):
        ssh.read_bytes(f"{remote_dir}/nope.log", offset=100)


def test_read_bytes_big_file(ssh: SshTransport, remote_dir: str) -> None:
    assert ssh.run(f"head -c 3000000 /dev/urandom > {remote_dir}/big.bin").ok
    local = ssh.read_bytes(f"{remote_dir}/big.bin")
    assert len(local) == 3_000_000
    assert (
        ssh.run(f"sha256sum < {remote_dir}/big.bin").stdout.split()[0]
        == __import__("hashlib").sha256(local).hexdigest()
    )
    assert ssh.read_bytes(f"{remote_dir}/big.bin", offset=1000) == local[1000:]


def test_get_tar(ssh: SshTransport, remote_dir: str, tmp_path: Path) -> None:
    setup = and_then(
        ["cd", remote_dir],
        "mkdir -p out",
        "echo hello > stdout.log",
        "printf x > 'out/a b.txt'",
        "head -c 2000000 /dev/urandom > out/big.bin",
    )
    assert ssh.run(setup).ok
    files = ["stdout.log", "out/a b.txt", "out/big.bin"]
    archive = tmp_path / "fetch.tar"
    seen: list[int] = []
    ssh.get_tar(remote_dir, files, archive, progress=seen.append)
    assert sum(seen) == archive.stat().st_size and len(seen) > 1
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == sorted(files)
        tar.extractall(tmp_path / "x", filter="data")
    assert (tmp_path / "x" / "stdout.log").read_text() == "hello\n"
    assert (tmp_path / "x" / "out" / "a b.txt").read_text() == "x"
    assert (tmp_path / "x" / "out" / "big.bin").stat().st_size == 2_000_000
    with pytest.raises(RemoteError, match="nope"):
        ssh.get_tar(remote_dir, ["nope"], tmp_path / "bad.tar")


# --- host keys --------------------------------------------------------------------------------------


def test_unknown_host_key(testbed_ssh_settings: SshSettings, tmp_path: Path, testbed_client: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    tr = _transport(testbed_ssh_settings, known_hosts=str(empty))
    with pytest.raises(HostKeyError) as info:
        tr.run("true")
    fp = (testbed_client / "host_fingerprint").read_text().strip()
    assert f"127.0.0.1:{TESTBED_SSH_PORT}" in info.value.message
    assert fp in info.value.message
    assert f"ssh-keyscan -p {TESTBED_SSH_PORT} 127.0.0.1" in (info.value.hint or "")
    assert info.value.exit_code == EXIT_REMOTE
    assert empty.read_text() == ""  # never added
    assert tr.connections_opened == 0


def test_changed_host_key(testbed_ssh_settings: SshSettings, tmp_path: Path, testbed_client: Path) -> None:
    jump_line = next(
        line
        for line in TESTBED_KNOWN_HOSTS.read_text().splitlines()
        if line.startswith(f"[127.0.0.1]:{TESTBED_JUMP_PORT} ")
    )
    wrong = tmp_path / "known_hosts"
    wrong.write_text(jump_line.replace(f":{TESTBED_JUMP_PORT} ", f":{TESTBED_SSH_PORT} ", 1) + "\n")
    tr = _transport(testbed_ssh_settings, known_hosts=str(wrong))
    with pytest.raises(HostKeyError, match="CHANGED") as info:
        tr.run("true")
    assert "man-in-the-middle" in info.value.message


def test_pinned_fingerprint_without_known_hosts(
    testbed_ssh_settings: SshSettings, tmp_path: Path, testbed_client: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    fp = (testbed_client / "host_fingerprint").read_text().strip()
    settings = _settings(testbed_ssh_settings, known_hosts=str(empty), host_key_fingerprints=[fp])
    with SshTransport(settings, site="testbed", interactive=False) as tr:
        assert tr.run("echo pinned").stdout == "pinned\n"
    # a pin that does not match, and nothing in known_hosts: refused
    other = (testbed_client / "jump_host_fingerprint").read_text().strip()
    settings = _settings(testbed_ssh_settings, known_hosts=str(empty), host_key_fingerprints=[other])
    with pytest.raises(HostKeyError, match="pinned"):
        SshTransport(settings, site="testbed", interactive=False).run("true")


# --- auth and connection errors ---------------------------------------------------------------------------


def test_wrong_key(testbed_ssh_settings: SshSettings, tmp_path: Path) -> None:
    key = write_key(tmp_path / "id_other")
    tr = _transport(testbed_ssh_settings, identity_file=str(key))
    with pytest.raises(AuthError) as info:
        tr.run("true")
    assert TESTBED_USER in info.value.message and str(key) in info.value.message
    assert "identity_file" in (info.value.hint or "")
    assert info.value.exit_code == EXIT_REMOTE


def test_wrong_user(testbed_ssh_settings: SshSettings) -> None:
    tr = SshTransport(_settings(testbed_ssh_settings, user="nobodyhere"), site="testbed", interactive=False)
    with pytest.raises(AuthError, match="nobodyhere"):
        tr.run("true")


def test_dead_port_fails_fast(testbed_ssh_settings: SshSettings) -> None:
    tr = SshTransport(_settings(testbed_ssh_settings, port=1), site="testbed", interactive=False)
    start = time.monotonic()
    with pytest.raises(RemoteError) as info:
        tr.run("true")
    assert time.monotonic() - start < 15  # refused is final: no retry loop, no 60 s hang (slack for slow CI)
    assert "127.0.0.1:1" in info.value.message and "refused" in info.value.message
    assert not isinstance(info.value, (AuthError, HostKeyError))


def test_unknown_host_name(testbed_ssh_settings: SshSettings) -> None:
    tr = SshTransport(_settings(testbed_ssh_settings, host="no-such-host.invalid"), site="testbed", interactive=False)
    with pytest.raises(RemoteError, match="resolve"):
        tr.run("true")


# --- ProxyJump ---------------------------------------------------------------------------------------------


def test_proxy_jump_from_settings(testbed_ssh_settings: SshSettings) -> None:
    settings = _settings(testbed_ssh_settings, proxy_jump=f"{TESTBED_USER}@127.0.0.1:{TESTBED_JUMP_PORT}")
    with SshTransport(settings, site="testbed", interactive=False) as tr:
        assert [j.port for j in tr.route.jumps] == [TESTBED_JUMP_PORT]
        assert tr.run("echo via-jump").stdout == "via-jump\n"
        r = tr.run(["sbatch", "--parsable", "--partition=debug", "--time=1", "--wrap", "true"])
        assert r.ok and r.stdout.strip().isdigit(), r.stderr
        assert len(tr._jumps) == 1 and tr.connections_opened == 1


def test_proxy_jump_from_ssh_config_alias(
    testbed_client: Path, isolated_ssh_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIFACTORY_SSH_CONFIG", str(TESTBED_SSH_CONFIG))
    with SshTransport(SshSettings(host="testbed-via-jump"), site="testbed", interactive=False) as tr:
        assert tr.username == TESTBED_USER
        assert [(j.hostname, j.port) for j in tr.route.jumps] == [("127.0.0.1", TESTBED_JUMP_PORT)]
        assert (tr.route.target.hostname, tr.route.target.port) == ("127.0.0.1", TESTBED_SSH_PORT)
        r = tr.run("sbatch --parsable --partition=debug --time=1 --wrap true")
        assert r.ok and r.stdout.strip().isdigit(), r.stderr


def test_proxy_jump_to_a_dead_port(testbed_ssh_settings: SshSettings) -> None:
    settings = _settings(testbed_ssh_settings, port=1, proxy_jump=f"127.0.0.1:{TESTBED_JUMP_PORT}")
    with pytest.raises(RemoteError, match=f"jump host 127.0.0.1:{TESTBED_JUMP_PORT}.*127.0.0.1:1"):
        SshTransport(settings, site="testbed", interactive=False).run("true")


def test_unknown_jump_host_key(testbed_ssh_settings: SshSettings, tmp_path: Path) -> None:
    only_target = tmp_path / "known_hosts"
    only_target.write_text(
        "".join(
            line + "\n"
            for line in TESTBED_KNOWN_HOSTS.read_text().splitlines()
            if line.startswith(f"[127.0.0.1]:{TESTBED_SSH_PORT} ")
        )
    )
    settings = _settings(
        testbed_ssh_settings, known_hosts=str(only_target), proxy_jump=f"127.0.0.1:{TESTBED_JUMP_PORT}"
    )
    with pytest.raises(HostKeyError, match=f"127.0.0.1:{TESTBED_JUMP_PORT}"):
        SshTransport(settings, site="testbed", interactive=False).run("true")


# --- a dead connection -----------------------------------------------------------------------------------


def test_connection_lost_mid_command_then_reconnect(ssh: SshTransport) -> None:
    assert ssh.run("true").ok
    # kill our own sshd session process: the connection drops while the command runs
    with pytest.raises(RemoteError, match="outcome is unknown"):
        ssh.run("kill -9 $PPID; sleep 5")
    assert ssh.run("echo back").stdout == "back\n"
    assert ssh.connections_opened == 2


def test_reconnect_when_connection_died_between_commands(ssh: SshTransport) -> None:
    assert ssh.run("true").ok
    assert ssh.run("(sleep 2; kill -9 $PPID) </dev/null >/dev/null 2>&1 &").ok
    deadline = time.monotonic() + 30
    while ssh.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not ssh.connected
    r = ssh.run("echo again")
    assert (r.rc, r.stdout) == (0, "again\n")
    assert ssh.connections_opened == 2


def test_importing_the_ssh_module_does_not_import_paramiko() -> None:
    modules = ", ".join(
        f"aifactory_cli.transport.ssh.{m}"
        for m in ("auth", "config", "connection", "hostkeys", "login", "settings", "streams")
    )
    code = f"import sys, {modules}; print('paramiko' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- a paramiko server: MFA prompts and a noisy login shell -------------------------------------------------


@pytest.fixture
def fake_login_node(tmp_path: Path, isolated_ssh_env: Path) -> Iterator[Any]:
    """`fake_login_node(mfa=...)` -> settings for a paramiko server whose login shell is noisy."""
    server = FakeServer(tmp_path, mfa=True, banner=True)

    def settings(mfa: bool = True) -> SshSettings:
        server.mfa = mfa
        return server.settings

    yield settings
    server.stop()


NOISE = len(LoginNode.BANNER) + len(LoginNode.STDERR_NOISE)


def test_noisy_login_shell_banner_is_cut(fake_login_node: Any) -> None:
    with SshTransport(fake_login_node(mfa=False), site="fake", interactive=False) as tr:
        r = tr.run("echo out; echo err >&2; exit 4")
        assert (r.rc, r.stdout, r.stderr) == (4, "out\n", "err\n")
        assert r.noise_bytes == NOISE  # what the shell printed before the markers, counted
        r = tr.run("true")
        assert (r.rc, r.stdout, r.stderr) == (0, "", "")
        r = tr.run("head -c 300000 /dev/zero | tr '\\0' z; echo tail")
        assert r.stdout == "z" * 300_000 + "tail\n"
        # a command that fails before the markers (a syntax error): the raw output is returned
        r = tr.run("echo (")
        assert r.rc != 0 and "syntax error" in r.stderr
        assert r.noise_bytes == 0  # nothing was cut off


def test_sites_check_reports_a_noisy_login_shell(fake_login_node: Any, tb: Any, aif_home: Path) -> None:
    # the row used to read an attribute no transport set, so it said "no output" on every site
    settings = fake_login_node(mfa=False)
    profiles = aif_home / "profiles"
    profiles.mkdir(parents=True)
    ssh = settings.model_dump(mode="json", exclude={"notes", "persist"})
    (profiles / "noisy.yaml").write_text("extends: testbed\nssh: " + json.dumps(ssh) + "\n")
    r = tb("sites", "check", "noisy", "--json", env={"AIFACTORY_PERSIST": "0"})
    rows = {c["check"]: c for c in json.loads(r.stdout)["checks"]}
    assert rows["connect"]["status"] == "ok", r.stdout + r.stderr
    # this server has no SFTP, as when an rc file's output breaks it: `logs` could not read files
    assert rows["login shell"]["status"] == "warn", rows["login shell"]
    assert rows["login shell"]["detail"].startswith(f"{NOISE} bytes of banner/rc-file output"), rows["login shell"]
    assert rows["file reads (SFTP)"]["status"] == "fail" and "SFTP" in rows["file reads (SFTP)"]["detail"]
    assert r.code != 0


def test_no_sftp_subsystem_is_a_remote_error(fake_login_node: Any) -> None:
    with (
        SshTransport(fake_login_node(mfa=False), site="fake", interactive=False) as tr,
        pytest.raises(RemoteError, match="SFTP"),
    ):
        tr.read_bytes("x")


def test_mfa_prompt_without_terminal_is_an_auth_error(fake_login_node: Any) -> None:
    tr = SshTransport(fake_login_node(mfa=True), site="fake", interactive=False)
    with pytest.raises(AuthError) as info:
        tr.run("true")
    assert "Verification code" in info.value.message
    assert "no terminal" in info.value.message
    assert info.value.exit_code == EXIT_REMOTE


def test_mfa_prompt_is_passed_to_the_user(
    fake_login_node: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[str] = []

    def fake_getpass(prompt: str = "", stream: Any = None) -> str:
        asked.append(prompt)
        return "123456"

    monkeypatch.setattr("aifactory_cli.transport.ssh.auth.getpass.getpass", fake_getpass)
    with SshTransport(fake_login_node(mfa=True), site="fake", interactive=True) as tr:
        assert tr.run("echo in").stdout == "in\n"
    assert asked == ["Verification code: "]
    assert "FakeHPC MFA" in capsys.readouterr().err


def test_wrong_mfa_code(fake_login_node: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aifactory_cli.transport.ssh.auth.getpass.getpass", lambda *a, **kw: "000000")
    with pytest.raises(AuthError, match="keyboard-interactive"):
        SshTransport(fake_login_node(mfa=True), site="fake", interactive=True).run("true")


def test_marker_survives_split_reads() -> None:
    from aifactory_cli.transport.ssh.streams import MarkerCut

    out = io.BytesIO()
    cut = MarkerCut(b"MARK", out.write)
    for piece in [b"ban", b"ner MA", b"RK", b"\nrea", b"l\n"]:
        cut.feed(piece)
    cut.finish()
    assert out.getvalue() == b"real\n"
    assert cut.noise_bytes == len(b"banner ")
