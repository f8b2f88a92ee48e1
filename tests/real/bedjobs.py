"""Many jobs on the test bed at once, for module-scoped fixtures: submit them in parallel through the
CLI (as users run it), then one `aifactory wait` for all. Used by the tests that run a job as each
site (`tests/profiles/bed/<site>-bed.yaml`) and the DDP tests."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import TEST_PROFILES
from tests.real.conftest import TESTBED_KEY

TORCH_VENV = Path(os.environ.get("TESTBED_TORCH_VENV", "/opt/aif-torch"))
BED_PROFILES = TEST_PROFILES / "bed"  # <site>-bed.yaml: each built-in site pointed at the test bed


@dataclass
class Submitted:
    """One job: how it was submitted, and what became of it."""

    case: str
    site: str
    args: list[str]
    code: int = -1
    stderr: str = ""
    job: dict = field(default_factory=dict)

    @property
    def workdir(self) -> Path:
        return Path(self.job["workdir"])

    def text(self, name: str) -> str:
        path = self.workdir / name
        return path.read_text(errors="replace") if path.is_file() else f"<{path} missing>"

    def explain(self) -> str:
        """What a failed assertion shows: the submit's stderr, the job, the ends of its logs."""
        if not self.job:
            return f"{self.case}: submit exit {self.code}: {self.stderr[-2000:]}"
        tail = "\n".join(self.text("stderr.log").splitlines()[-40:])
        return (
            f"{self.case}: {self.job.get('state')} exit {self.job.get('exit_code')} in {self.job.get('workdir')}\n"
            f"--- stdout.log:\n{self.text('stdout.log')[-3000:]}\n--- stderr.log (end):\n{tail}"
        )


def bed_env(tmp: Path, extra_path: str | None = None) -> dict[str, str]:
    """The environment of `aifactory` runs: a private AIFACTORY_HOME, tests/profiles/bed and tests/profiles,
    no ssh_config and
    no AIFACTORY_* of whoever runs the tests; optionally a directory put first on PATH (the local site's
    jobs inherit it)."""
    if not TESTBED_KEY.is_file():
        pytest.fail(f"no test bed ({TESTBED_KEY} missing): run tests/testbed/start.sh (tests/run does)")
    empty = tmp / "ssh_config_empty"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIFACTORY_")}
    env.update(
        AIFACTORY_HOME=str(tmp / "home"),
        AIFACTORY_PROFILES=f"{BED_PROFILES}{os.pathsep}{TEST_PROFILES}",
        AIFACTORY_SSH_CONFIG=str(empty),
        NO_COLOR="1",
        COLUMNS="200",
    )
    if extra_path:
        env["PATH"] = f"{extra_path}{os.pathsep}{env.get('PATH', '')}"
    return env


def aif(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aifactory_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(cwd),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def submit_all(subs: list[Submitted], env: dict[str, str], cwd: Path, wait_s: int) -> list[Submitted]:
    """Submit every job at once (threads: one CLI process each), then wait for all of them together."""

    def one(sub: Submitted) -> None:
        r = aif(["submit", *sub.args, "--site", sub.site, "--json"], env, cwd, timeout=120)
        sub.code, sub.stderr = r.returncode, r.stderr
        if r.returncode == 0:
            sub.job = json.loads(r.stdout)["jobs"][0]

    with ThreadPoolExecutor(max_workers=len(subs)) as pool:
        list(pool.map(one, subs))
    ids = [s.job["id"] for s in subs if s.job]
    if ids:
        r = aif(["wait", *ids, "--json", "--timeout", str(wait_s)], env, cwd, timeout=wait_s + 60)
        try:
            final = {j["id"]: j for j in json.loads(r.stdout)["jobs"]}
        except (ValueError, KeyError):
            final = {}
        for s in subs:
            if s.job:
                s.job = final.get(s.job["id"], s.job)
        if r.returncode not in (0, 1):  # a timeout: what the jobs that did not end were doing
            unfinished = [s.explain() for s in subs if s.job and s.job.get("ended_at") is None]
            pytest.fail(f"aifactory wait: exit {r.returncode}: {r.stderr[-2000:]}\n\n" + "\n\n".join(unfinished))
    return subs


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def data_round(env: dict[str, str], tmp: Path, tag: str, site: str, up: int, down: int) -> tuple[str, dict, dict]:
    """Submit a job whose `data:` is a random file of `up` bytes and which writes `down` random bytes
    into out.bin (`download:`), wait, fetch it; check the sha256 the job saw and the fetched copy's.
    (the submit's stderr, its job JSON, the fetch's JSON); the job dir and the local copies are removed."""
    data = os.urandom(up)
    root = tmp / tag
    root.mkdir()
    (root / "big.bin").write_bytes(data)
    spec = root / "job.yaml"
    spec.write_text(
        f"name: big{tag}\nresources: {{time: 5m}}\ndata: [big.bin]\n"
        f"run: sha256sum big.bin; head -c {down} /dev/urandom > out.bin\ndownload: [out.bin]\n"
    )
    r = aif(["submit", str(spec), "--site", site, "--wait", "--json"], env, root, timeout=180)
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)["jobs"][0]
    assert job["state"] == "COMPLETED", job
    workdir = Path(job["workdir"])
    assert hashlib.sha256(data).hexdigest() in (workdir / "stdout.log").read_text()
    f = aif(["fetch", job["id"], "--dest", str(root / "got"), "--json"], env, root, timeout=180)
    assert f.returncode == 0, f.stderr
    fetched = json.loads(f.stdout)
    assert fetched["checked"] == 1 and sha256_file(root / "got" / "out.bin") == sha256_file(workdir / "out.bin")
    subprocess.run(["rm", "-rf", str(workdir), str(root)], check=False)
    return r.stderr, job, fetched
