"""The end of a job known at once: `submit --wait` on a site whose profile says `poll_interval: 30`
(lumi-bed with LUMI's own interval) reports a 1-second job within seconds of its end, learned from the
job dir over the CLI's connection and confirmed by Slurm (the states are Slurm's); the local site
likewise, whatever the poll backoff."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.real.bedjobs import aif, bed_env
from tests.real.conftest import TESTBED_ACCOUNT

pytestmark = pytest.mark.real

POLL_INTERVAL = 30


def _submit_wait(tmp_path: Path, env: dict[str, str], name: str, run: str, site: str) -> tuple[dict, float, str]:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(f"name: {name}\nrun: {run}\nresources: {{time: 5m}}\n")
    r = aif(["submit", str(spec), "--site", site, "--wait", "--json"], env, tmp_path, timeout=120)
    returned = time.time()
    assert r.stdout, f"exit {r.returncode}: {r.stderr}"
    (job,) = json.loads(r.stdout)["jobs"]
    ended = Path(job["workdir"], "exit_code").stat().st_mtime  # the batch script's own end
    return job, returned - ended, r.stderr


def test_submit_wait_reports_the_end_long_before_poll_interval(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "lumi-slow.yaml").write_text(f"extends: lumi-bed\npoll_interval: {POLL_INTERVAL}\n")
    env = bed_env(tmp_path)
    env["AIFACTORY_PROFILES"] = f"{profiles}:{env['AIFACTORY_PROFILES']}"
    env["AIFACTORY_ACCOUNT"] = TESTBED_ACCOUNT
    cases = [
        ("ok", "sleep 1", "lumi-slow"),
        ("bad", "sleep 1; exit 3", "lumi-slow"),
        # the local site's wait backs off to 4-6 s between polls by then; its status file is watched too
        ("loc", "sleep 12", "local"),
    ]
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        results = list(pool.map(lambda c: _submit_wait(tmp_path, env, *c), cases))
    got = {job["name"]: (job, late, stderr) for job, late, stderr in results}
    expect = {"ok": ("COMPLETED", 0), "bad": ("FAILED", 3), "loc": ("COMPLETED", 0)}
    for name, (state, code) in expect.items():
        job, late, stderr = got[name]
        assert (job["state"], job["exit_code"]) == (state, code), (name, job, stderr)
        assert late < 10, (name, late, stderr)  # not ~30 s: the next regular poll was not waited for
    for name in ("ok", "bad"):  # Slurm's own state, not the exit-code file's guess
        job = got[name][0]
        assert job["slurm_state"] == expect[name][0] and job["reason"] != "from the job's exit_code file", job
