"""The CI flow on the real test bed: no terminal, configuration only from the environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, TEST_PROFILES
from tests.real.conftest import TESTBED_CLIENT

pytestmark = pytest.mark.real
CLIENT = TESTBED_CLIENT


@pytest.fixture
def ci_env(tmp_path: Path) -> dict[str, str]:
    """A CI runner's environment: a site profile without key or known_hosts, which come as secrets."""
    if not (CLIENT / "id_ed25519").is_file():
        pytest.fail("no test bed: run tests/testbed/start.sh (tests/run does)")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "cibed.yaml").write_text(
        "extends: testbed\nssh: {host: 127.0.0.1, port: 2222, user: null, identity_file: null, known_hosts: null}\n"
    )
    key = tmp_path / "key"
    key.write_bytes((CLIENT / "id_ed25519").read_bytes())
    key.chmod(0o600)
    empty_ssh_config = tmp_path / "ssh_config"
    empty_ssh_config.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIFACTORY_")}
    env.update(
        AIFACTORY_HOME=str(tmp_path / "home"),
        AIFACTORY_SITE="cibed",
        AIFACTORY_PROFILES=f"{profiles}:{TEST_PROFILES}",
        AIFACTORY_ACCOUNT="project_465000001",
        AIFACTORY_SSH_USER="hpcuser",
        AIFACTORY_SSH_KEY=str(key),
        AIFACTORY_SSH_KNOWN_HOSTS=(CLIENT / "known_hosts").read_text(),
        AIFACTORY_SSH_CONFIG=str(empty_ssh_config),
        CI="true",
    )
    env.pop("SSH_AUTH_SOCK", None)
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aifactory_cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def _bench(tmp_path: Path, fail_element: str | None = None) -> Path:
    spec = (EXAMPLES / "bench.yaml").read_text()
    (tmp_path / "bench.py").write_text((EXAMPLES / "bench.py").read_text())
    if fail_element:
        spec = spec.replace("run: python3 bench.py", f'run: test "$SIZE" != {fail_element} || exit 3; python3 bench.py')
    path = tmp_path / "bench.yaml"
    path.write_text(spec)
    return path


def test_sweep_in_ci_completes_and_reports(ci_env: dict[str, str], tmp_path: Path) -> None:
    spec = _bench(tmp_path)
    r = _run(
        ["submit", str(spec), "--wait", "--json", "--junit", "junit.xml", "--job-id-file", "ids"], ci_env, tmp_path
    )
    assert r.returncode == 0, r.stderr
    (job,) = json.loads(r.stdout)["jobs"]
    assert [(t["task_id"], t["state"]) for t in job["tasks"]] == [(0, "COMPLETED"), (1, "COMPLETED"), (2, "COMPLETED")]
    assert "\x1b[" not in r.stderr  # no colours, no progress bars without a terminal
    assert (tmp_path / "ids").read_text().strip() == job["id"]
    f = _run(["fetch", job["id"], "--dest", "results", "--json"], ci_env, tmp_path)
    assert f.returncode == 0, f.stderr
    fetched = json.loads(f.stdout)
    assert len(fetched["files"]) == 3 and fetched["dest"].endswith("results")
    # the transfer for CI: the tar stream's bytes (3 files: a 512-byte header and a padded block each,
    # tar's end blocks), seconds, MB/s
    assert 3 * 1024 <= fetched["bytes"] <= 64 * 1024 and fetched["seconds"] > 0 and fetched["rate_mb_s"] >= 0
    # each element's files under its own name (element index and values)
    got = {p.relative_to(tmp_path / "results").as_posix(): json.loads(p.read_text())["size"]
           for p in (tmp_path / "results").glob("*/results/*.json")}  # fmt: skip
    assert got == {
        "0_SIZE=1024/results/bench-1024.json": 1024,
        "1_SIZE=2048/results/bench-2048.json": 2048,
        "2_SIZE=4096/results/bench-4096.json": 4096,
    }


def test_sweep_with_a_failing_element_exits_1_and_junit_shows_it(ci_env: dict[str, str], tmp_path: Path) -> None:
    spec = _bench(tmp_path, fail_element="2048")
    r = _run(["submit", str(spec), "--wait", "--json", "--junit", "junit.xml"], ci_env, tmp_path)
    assert r.returncode == 1, r.stderr
    (job,) = json.loads(r.stdout)["jobs"]
    assert [(t["state"], t["exit_code"]) for t in job["tasks"]] == [("COMPLETED", 0), ("FAILED", 3), ("COMPLETED", 0)]
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "3" and suite.get("failures") == "1"
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["bench[1] SIZE=2048"]  # named by its values too
    assert "FAILED exit 3" in (failed[0].find("failure").get("message") or "")  # type: ignore[union-attr]


def test_sigterm_while_waiting_cancels_the_remote_job(ci_env: dict[str, str], tmp_path: Path) -> None:
    spec = tmp_path / "long.yaml"
    spec.write_text("name: long\nrun: sleep 600\nresources: {time: 15m}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aifactory_cli", "submit", str(spec), "--wait", "--json", "--job-id-file", "ids"],
        env=ci_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not ((tmp_path / "ids").exists() and _state(ci_env, tmp_path) == "RUNNING"):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err  # 128 + SIGTERM (Ctrl-C is 130)
    assert "cancelling" in err
    job_id = (tmp_path / "ids").read_text().strip()
    status = json.loads(_run(["status", job_id, "--json"], ci_env, tmp_path).stdout)["jobs"][0]
    sid = status["slurm_job_id"]
    for _ in range(40):  # sacct is the judge
        acct = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", sid], capture_output=True, text=True)
        if acct.stdout.startswith("CANCELLED"):
            break
        time.sleep(0.5)
    assert acct.stdout.startswith("CANCELLED"), acct.stdout


def _state(env: dict[str, str], cwd: Path) -> str:
    job_id = (cwd / "ids").read_text().strip()
    r = _run(["status", job_id, "--json"], env, cwd)
    return json.loads(r.stdout)["jobs"][0]["state"] if r.returncode == 0 else ""


def test_dependency_chain_where_the_first_fails(ci_env: dict[str, str], tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    a.write_text("name: prepare\nrun: exit 3\n")
    b = tmp_path / "b.yaml"
    b.write_text("name: train\nrun: touch ran-b\n")
    r = _run(["submit", str(a), str(b), "--wait", "--json"], ci_env, tmp_path)
    assert r.returncode == 1, r.stderr
    first, second = json.loads(r.stdout)["jobs"]
    assert (first["state"], first["exit_code"]) == ("FAILED", 3)
    assert (second["state"], second["reason"]) == ("CANCELLED", "DependencyNeverSatisfied")
    assert second["started_at"] is None
    assert not (Path(second["workdir"]) / "ran-b").exists()
    assert first["slurm_job_id"] in json.dumps(second.get("depends_on"))
