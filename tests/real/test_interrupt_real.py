"""Ctrl-C on `submit --wait`, as people and CI systems send it, against real Slurm and the local site.

At a terminal (a pseudo-terminal that is the process's controlling terminal; Ctrl-C typed into it, so
the kernel sends SIGINT to the foreground process group as it does for a person), `submit --wait`
detaches: exit 130, a message with the re-attach and cancel commands, and the job still RUNNING.
Under CI with no terminal, SIGINT cancels: real scancel, and both the JSON on stdout and the JUnit file
report the final CANCELLED state. Measured times (signal -> exit) go to the test output (`-s`)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import subprocess
import sys
import termios
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from aifactory_cli.cli.waiting import CI_VARIABLES
from tests.real.bedjobs import aif, bed_env

pytestmark = pytest.mark.real

ACCOUNT = ["-A", "project_465000001"]
SITES = {"local": [], "lumi-bed": ACCOUNT}


def _sleeper(tmp: Path) -> Path:
    spec = tmp / "sleepy.yaml"
    spec.write_text("name: sleepy\nrun: sleep 300\nresources: {time: 10m}\n")
    return spec


def _env(tmp: Path, ci: bool) -> dict[str, str]:
    env = {k: v for k, v in bed_env(tmp).items() if k != "CI" and k not in CI_VARIABLES}  # a person's shell
    if ci:
        env["CI"] = "true"
    return env


def _status(job_id: str, env: dict[str, str], cwd: Path) -> dict:
    r = aif(["status", job_id, "--json"], env, cwd, timeout=60)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout)["jobs"][0])


def _acquire_terminal() -> None:
    """In the child, after setsid: the pty on fd 0 becomes its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyRun:
    """`aifactory ARGS` with stdin, stdout and stderr on a pseudo-terminal it controls."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aifactory_cli", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_acquire_terminal,
        )
        os.close(slave)
        self.text = b""

    def _pump(self, wait: float) -> bool:
        """Read what is there; False at the end (Linux: EIO once the child closed the pty)."""
        ready, _, _ = select.select([self.master], [], [], wait)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:
            return False
        self.text += data
        return bool(data)

    def expect(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text.decode(errors="replace"))
            if found:
                return found
            if not self._pump(0.1) and self.proc.poll() is not None:
                break
        raise AssertionError(f"{pattern!r} not seen in {timeout} s; output:\n{self.text.decode(errors='replace')}")

    def finish(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self._pump(0.1) and time.monotonic() < deadline:
            pass
        code = self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        os.close(self.master)
        return code


@pytest.mark.parametrize("site", list(SITES))
def test_ctrl_c_at_a_terminal_detaches_and_the_job_runs_on(site: str, tmp_path: Path) -> None:
    env = _env(tmp_path, ci=False)
    run = PtyRun(["submit", str(_sleeper(tmp_path)), "--site", site, *SITES[site], "--wait"], env, tmp_path)
    job_id = ""
    try:
        job_id = run.expect(r"submitted (\w+) \(sleepy\)", 90).group(1)
        run.expect(rf"{job_id} sleepy: RUNNING", 60)
        sent = time.monotonic()
        os.write(run.master, b"\x03")  # Ctrl-C typed at the terminal
        code = run.finish(30)
        took = time.monotonic() - sent
        out = run.text.decode(errors="replace")
        assert code == 130, out
        assert f"aifactory wait {job_id}" in out and f"aifactory cancel {job_id}" in out, out
        assert "not cancelled" in out and "Traceback" not in out, out
        job = _status(job_id, env, tmp_path)
        assert job["state"] == "RUNNING", job  # its place and its run were kept
        print(f"\n[interrupt] {site} detach: Ctrl-C -> exit {code} in {took:.2f} s; afterwards {job['state']}")
    finally:
        if job_id:
            cancel = aif(["cancel", job_id], env, tmp_path, timeout=60)
            assert cancel.returncode == 0, cancel.stderr


def test_sigint_under_ci_cancels_and_reports_the_final_state(tmp_path: Path) -> None:
    env = _env(tmp_path, ci=True)
    args = ["submit", str(_sleeper(tmp_path)), "--site", "lumi-bed", *ACCOUNT, "--wait", "--json"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "aifactory_cli", *args, "--junit", "report.xml"],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None and proc.stdout is not None
    lines: list[str] = []
    running = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if re.search(r": RUNNING$", line.rstrip()):
                running.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert running.wait(90), "".join(lines)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out = proc.stdout.read()
        code = proc.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    err = "".join(lines)
    assert code == 130, err
    (job,) = json.loads(out)["jobs"]
    assert "cancelling" in err and f"{job['id']} sleepy: CANCELLED" in err, err
    assert job["state"] == "CANCELLED", job  # stdout reports the final state, not RUNNING
    suite = ET.parse(tmp_path / "report.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    states = [p.get("value") for p in suite.iter("property") if p.get("name") == "state"]
    failure = suite.find("testcase/failure")
    assert states == ["CANCELLED"] and failure is not None and failure.get("type") == "CANCELLED"
    acct = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "State", "-j", job["slurm_job_id"]], capture_output=True, text=True
    )
    assert acct.stdout.startswith("CANCELLED"), acct.stdout  # Slurm itself is the judge
    print(f"\n[interrupt] lumi-bed CI cancel: SIGINT -> exit {code} in {took:.2f} s; JSON/JUnit {job['state']}")
