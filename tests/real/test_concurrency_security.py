"""Many CLI processes at once against the test bed; hostile values end up literally in the job,
never executed; private permissions; no secrets in the store or JSON."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import sqlite3
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.conftest import TEST_PROFILES
from tests.real.conftest import TESTBED_ACCOUNT, TESTBED_CLIENT

pytestmark = pytest.mark.real
CLIENT = TESTBED_CLIENT
ACCOUNT = TESTBED_ACCOUNT
MARKER = Path("/tmp/aif-pwned")


def _aif(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aifactory_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_twenty_parallel_submits_and_statuses(testbed_env: dict[str, str], tmp_path: Path) -> None:
    env = testbed_env
    name = f"par{secrets.token_hex(4)}"  # unique on a reused test bed too (sacct looks back an hour)
    spec = tmp_path / "par.yaml"
    spec.write_text(f"name: {name}\nrun: echo $AIF_JOB_ID\nresources: {{time: 5m}}\n")

    def one(i: int) -> subprocess.CompletedProcess[str]:
        if i % 2:
            _aif(["status", "--json"], env)  # statuses interleaved with the submits
        return _aif(["submit", str(spec), "--site", "testbed", "--json"], env)

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, range(20)))
    errors = [r.stderr for r in results if r.returncode != 0]
    assert errors == []
    assert not any("locked" in r.stderr for r in results)
    ids = [json.loads(r.stdout)["jobs"][0]["slurm_job_id"] for r in results]
    assert len(set(ids)) == 20
    stored = json.loads(_aif(["list", "--json"], env).stdout)["jobs"]
    assert len(stored) == 20 and len({j["id"] for j in stored}) == 20
    deadline = time.time() + 30  # slurmdbd records new jobs with a lag
    while True:
        acct = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-a", "-S", "now-1hour", "-o", "JobID", "--name", name],
            capture_output=True,
            text=True,
        ).stdout.split()
        if len(acct) >= 20 or time.time() > deadline:
            break
        time.sleep(0.5)
    assert sorted(acct) == sorted(ids)  # 20 in Slurm, the same 20 in the store, no duplicates
    assert _aif(["wait", *[j["id"] for j in stored], "--timeout", "120"], env).returncode == 0


# Hostile text: quotes, command substitution, backticks, newlines, ';', globs, unicode, leading
# dashes, backslashes, NULs are refused by YAML/our validation, so they are left out.
HOSTILE_ALPHABET = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r")
SEEDS = [
    "$(touch /tmp/aif-pwned)",
    "`touch /tmp/aif-pwned`",
    "'; touch /tmp/aif-pwned; '",
    '"; touch /tmp/aif-pwned #',
    "\n touch /tmp/aif-pwned \n",
    "*",
    "--help",
    "-rf /",
    "${IFS}touch${IFS}/tmp/aif-pwned",
    "a\\nb",
    "ünïcødé ✓",
    "$HOME",
    "!!",
    "&& touch /tmp/aif-pwned",
    "| touch /tmp/aif-pwned",
    "> /tmp/aif-pwned",
    "%s%n",
    "~",
]
hostile = st.one_of(st.sampled_from(SEEDS), st.text(HOSTILE_ALPHABET, min_size=1, max_size=40))
N_VALUES = 120  # per property example: env values, matrix values, setup/run arguments


def _spec_with(values: list[str]) -> dict:
    env = {f"V{i}": v for i, v in enumerate(values)}
    # run prints every value back, one per line, as JSON (so newlines and unicode compare exactly)
    run = (
        'python3 -c \'import json,os; print(json.dumps([os.environ[f"V{i}"] for i in range('
        + str(len(values))
        + ')] + [os.environ["M"]] + [__import__("sys").argv[1:]]))\' '
        + " ".join(shlex.quote(v) for v in values[:20])
    )
    return {
        "name": "hostile",
        "env": env,
        "matrix": {"M": values[:3]},
        "run": run,
        "setup": "echo " + shlex.quote(values[0]),
        "resources": {"time": "5m"},
    }


@seed(20261122)
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.lists(hostile, min_size=N_VALUES, max_size=N_VALUES))
def test_hostile_values_reach_the_job_literally(tmp_path_factory, values: list[str]) -> None:
    """3 examples x 120 values x (env + 20 run args + 3 matrix values + setup) = 360+ hostile inputs
    through sshd and Slurm; each job prints them back literally and nothing they contain runs."""
    import yaml

    tmp = tmp_path_factory.mktemp("hostile")
    empty = tmp / "ssh_config"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIFACTORY_")}
    env.update(
        AIFACTORY_HOME=str(tmp / "home"),
        AIFACTORY_PROFILES=str(TEST_PROFILES),
        AIFACTORY_ACCOUNT=ACCOUNT,
        AIFACTORY_SSH_CONFIG=str(empty),
    )
    spec = tmp / "hostile.yaml"
    spec.write_text(yaml.safe_dump(_spec_with(values)))
    MARKER.unlink(missing_ok=True)
    script = _aif(["render", str(spec), "--site", "testbed"], env).stdout
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    r = _aif(["submit", str(spec), "--site", "testbed", "--wait", "--json", "--timeout", "120"], env)
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)["jobs"][0]
    for task in range(3):
        out = _aif(["logs", job["id"], "--task", str(task)], env).stdout
        printed = json.loads(out.strip().splitlines()[-1])
        assert printed[:N_VALUES] == values
        assert printed[N_VALUES] == values[task]
        assert printed[N_VALUES + 1] == values[:20]
    assert not MARKER.exists()


def test_private_permissions_and_no_secrets(testbed_env: dict[str, str], tmp_path: Path) -> None:
    env = testbed_env
    key = (CLIENT / "id_ed25519").read_text()
    spec = tmp_path / "p.yaml"
    spec.write_text("name: perm\nrun: echo ok\nresources: {time: 5m}\n")
    r = _aif(
        ["submit", str(spec), "--site", "testbed", "--wait", "--json"],
        {
            **env,
            "AIFACTORY_SSH_KEY": str(CLIENT / "id_ed25519"),
            "AIFACTORY_SSH_KNOWN_HOSTS": (CLIENT / "known_hosts").read_text(),
        },
    )
    assert r.returncode == 0, r.stderr
    home = Path(env["AIFACTORY_HOME"])
    for d in (home, home / "state"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    for f in (home / "state").rglob("*"):
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f
    job = json.loads(r.stdout)["jobs"][0]
    assert stat.S_IMODE(Path(job["workdir"]).stat().st_mode) & 0o777 == 0o700  # (setgid from the project dir)
    secret_line = key.strip().splitlines()[1]
    blobs = [
        r.stdout,
        r.stderr,
        (home / "state" / "jobs.sqlite3").read_bytes().decode(errors="replace"),
        _aif(["status", job["id"], "--json"], env).stdout,
    ]
    for blob in blobs:
        assert secret_line not in blob and "PRIVATE KEY" not in blob
    conn = sqlite3.connect(home / "state" / "jobs.sqlite3")
    try:
        text = " ".join(str(x) for row in conn.execute("SELECT * FROM jobs") for x in row)
    finally:
        conn.close()
    assert "PRIVATE KEY" not in text
