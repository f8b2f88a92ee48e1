"""MFA on a real OpenSSH server: `AuthenticationMethods publickey,keyboard-interactive`, the code
checked by PAM (pam_exec comparing the typed answer with a file the test controls). sshd is started
through a symlink of the test's own name, which is its PAM service name, so the PAM file it reads is
/etc/pam.d/<that name> (written for the test, removed after); the system's /etc/pam.d/sshd is not
touched. Side by side with the OpenSSH client (answers from SSH_ASKPASS): the right code logs in;
two wrong codes then the right one log in on one connection (NumberOfPasswordPrompts); three wrong
codes are refused. And `submit --wait --follow` of a short job at a terminal under `MaxSessions 1`
+ MFA, with and without the connection agent: 1 login (TCP connections counted on the server),
1 code prompt."""

from __future__ import annotations

import contextlib
import os
import pty
import secrets
import select
import shlex
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aifactory_cli.cli.waiting import CI_VARIABLES
from aifactory_cli.errors import AifactoryError, AuthError
from aifactory_cli.transport.ssh.connection import SshTransport
from aifactory_cli.transport.ssh.settings import SshSettings
from tests.real.conftest import TESTBED_ACCOUNT, TESTBED_KEY, TESTBED_USER
from tests.real.own_sshd import SSHD, OwnSshd, own_sshd
from tests.real.test_agent import agent_pids

pytestmark = pytest.mark.real

PAM_DIR = Path("/etc/pam.d")
CODE = "424242"
PROMPT = b"Password: "  # pam_exec's prompt for the code (expose_authtok)
MFA = "UsePAM yes\nKbdInteractiveAuthentication yes\nAuthenticationMethods publickey,keyboard-interactive\n"


@contextlib.contextmanager
def mfa_sshd(tmp: Path, options: str = "") -> Iterator[OwnSshd]:
    """An own sshd (tests/real/own_sshd.py) that wants the key, then the code in tmp/code."""
    if not os.access(PAM_DIR, os.W_OK):
        pytest.fail(f"the MFA server writes its own PAM service file into {PAM_DIR}: run the real tier as root")
    tmp.mkdir(parents=True, exist_ok=True)
    service = f"aif-mfa-{os.getpid()}-{secrets.token_hex(3)}"
    program = tmp / service
    program.symlink_to(SSHD)
    code = tmp / "code"
    code.write_text(CODE + "\n")
    check = tmp / "check-code.sh"  # pam_exec gives it the typed answer on stdin, NUL-terminated
    check.write_text(f'#!/bin/sh\ntyped=$(tr -d \'\\000\')\n[ "$typed" = "$(cat {shlex.quote(str(code))})" ]\n')
    check.chmod(0o755)
    pam = PAM_DIR / service
    # type=auth: the script checks the code, not pam_setcred; pam_permit gives setcred its success
    pam.write_text(
        f"auth required pam_exec.so type=auth expose_authtok quiet {check}\nauth optional pam_permit.so\n"
        "account required pam_permit.so\nsession required pam_permit.so\n"
    )
    try:
        with own_sshd(tmp / "sshd", MFA + options, program=program) as server:
            yield server
    finally:
        pam.unlink(missing_ok=True)


@pytest.fixture
def mfa_cfg(tmp_path: Path, isolated_ssh_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[OwnSshd, Path]]:
    with mfa_sshd(tmp_path / "mfa") as server:
        cfg = tmp_path / "ssh_config"
        cfg.write_text(server.ssh_config("mfa", TESTBED_KEY, batch=False))
        monkeypatch.setenv("AIFACTORY_SSH_CONFIG", str(cfg))
        yield server, cfg


def _openssh(cfg: Path, tmp: Path, answers: list[str]) -> tuple[int, int]:
    """`ssh -F cfg mfa true`, the codes typed by SSH_ASKPASS; (exit status, prompts)."""
    (tmp / "answers").write_text("".join(a + "\n" for a in answers))
    asked = tmp / "asked"
    asked.write_text("")
    askpass = tmp / "askpass.sh"
    askpass.write_text(
        f'#!/bin/sh\necho "$*" >> {shlex.quote(str(asked))}\n'
        f'sed -n "$(wc -l < {shlex.quote(str(asked))})p" {shlex.quote(str(tmp / "answers"))}\n'
    )
    askpass.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
    r = subprocess.run(
        ["ssh", "-F", str(cfg), "mfa", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        start_new_session=True,
    )
    return r.returncode, len(asked.read_text().splitlines())


def _aifactory(monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> tuple[Any, int]:
    """The SSH transport at a terminal (getpass answers); (exit status of `true` or the error, prompts)."""
    asked: list[str] = []

    def getpass(prompt: str, stream: object = None) -> str:
        asked.append(prompt)
        return answers.pop(0)

    monkeypatch.setattr("aifactory_cli.transport.ssh.auth.getpass.getpass", getpass)
    tr = SshTransport(SshSettings(host="mfa", connect_timeout=10), site="mfa", interactive=True)
    try:
        return tr.run("true").rc, len(asked)
    except AifactoryError as exc:
        return exc, len(asked)
    finally:
        tr.close()


@pytest.mark.parametrize(
    "answers",
    [[CODE], ["111111", "222222", CODE], ["111111", "222222", "333333"]],
    ids=["right", "wrong-wrong-right", "wrong-x3"],
)
def test_a_pam_code_after_the_key_like_openssh(
    mfa_cfg: tuple[OwnSshd, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answers: list[str]
) -> None:
    server, cfg = mfa_cfg
    theirs, their_prompts = _openssh(cfg, tmp_path, answers)
    before = server.connections()
    ours, our_prompts = _aifactory(monkeypatch, list(answers))
    our_logins = server.connections() - before
    print(
        f"\nMFA (PAM code) {answers}: OpenSSH exit {theirs}, {their_prompts} prompt(s); "
        f"aifactory {ours!r}, {our_prompts} prompt(s), {our_logins} login(s)"
    )
    assert their_prompts == our_prompts == len(answers) and our_logins == 1
    if answers[-1] == CODE:
        assert theirs == 0 and ours == 0, server.log.read_text()[-2000:]
    else:
        assert theirs == 255 and isinstance(ours, AuthError)
        assert "refused the answer" in ours.message and "the key" not in (ours.hint or "")


def _at_terminal(args: list[str], env: dict[str, str], code: str, timeout: float = 90) -> tuple[int, str, int]:
    """`aifactory ARGS` with a pty as its terminal, typing `code` at each code prompt; (exit, output, prompts)."""
    master, slave = pty.openpty()

    def controlling_tty() -> None:
        import fcntl

        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "aifactory_cli", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        # a person at a terminal: CI=true (set by CI runners) would rightly forbid every prompt
        env={**{k: v for k, v in os.environ.items() if k != "CI" and k not in CI_VARIABLES}, **env},
        start_new_session=True,
        preexec_fn=controlling_tty,
    )
    os.close(slave)
    seen, prompts = b"", 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every process of the terminal has closed it
                    chunk = b""
                if not chunk:
                    break
                seen += chunk
                while seen.count(PROMPT) > prompts:
                    prompts += 1
                    os.write(master, code.encode() + b"\n")
            elif proc.poll() is not None:
                break
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return proc.returncode, seen.decode(errors="replace").replace("\r\n", "\n"), prompts


@pytest.mark.parametrize("persist", ["0", "60"])
def test_submit_wait_follow_at_a_terminal_one_login_one_prompt_under_max_sessions_1_and_mfa(
    tmp_path: Path, aif_home: Path, isolated_ssh_env: Path, persist: str
) -> None:
    with mfa_sshd(tmp_path / "mfa", "MaxSessions 1\n") as server:
        profiles = aif_home / "profiles"
        profiles.mkdir(parents=True)
        (profiles / "mfasite.yaml").write_text(
            f"extends: testbed\nssh: {{host: {server.address}, port: {server.port}, user: {TESTBED_USER}, "
            f"identity_file: {TESTBED_KEY}, known_hosts: {server.known_hosts}}}\n"
        )
        spec = tmp_path / "short.yaml"
        spec.write_text("name: short\nrun: for i in 1 2 3 4; do echo line $i; sleep 1; done\n")
        env = {"AIFACTORY_ACCOUNT": TESTBED_ACCOUNT, "AIFACTORY_PERSIST": persist, "NO_COLOR": "1"}
        started = time.monotonic()
        try:
            rc, out, prompts = _at_terminal(["submit", str(spec), "--site", "mfasite", "--wait", "--follow"], env, CODE)
        finally:
            for pid in agent_pids(aif_home):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        took = time.monotonic() - started
        logins = server.connections()
        print(
            f"\nMaxSessions 1 + MFA (PAM code), AIFACTORY_PERSIST={persist}: {logins} login(s), "
            f"{prompts} code prompt(s) in {took:.1f} s, exit {rc}"
        )
        assert rc == 0, out + server.log.read_text()[-2000:]
        assert [line for line in out.splitlines() if line.startswith("line ")] == [f"line {i}" for i in range(1, 5)], (
            out
        )
        assert logins == 1 and prompts == 1, out + server.log.read_text()[-3000:]
