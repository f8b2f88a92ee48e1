"""The researcher's daily loop with a sweep, as users run it through the CLI, on the test bed as LUMI
and on the local site: a 4-element learning-rate sweep where one element fails.

- `submit --wait` (human output) names the failed element, its values, its exit code and the end of
  its stderr (the traceback), and says how to rerun it;
- every element writes `outputs/rank0.json` relative to where it runs: each works in its own
  directory, so `fetch` brings back all 3 successful elements' files, distinct, under names that say
  which element and values;
- `rerun --failed` resubmits only the failed element (its values, nothing else), linked to the
  original.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.real.bedjobs import aif, bed_env
from tests.real.slurmbeds import BEDS

pytestmark = pytest.mark.real
PROGRAM = REPO / "tests" / "data" / "sweep" / "train.py"
VALUES = ["0.1", "0.01", "-1", "0.001"]
# lumi24-bed: the same sweep on the Slurm 24.11 bed (tests/testbed/start24.sh)
SITES = {"lumi-bed": ["-A", "project_465000001"], "lumi24-bed": ["-A", "project_465000001"], "local": []}


def _spec(site: str) -> str:
    modules = "" if site == "local" else "modules: [pytorch/2.13.0-cpu]\n"  # python3 on the bed's nodes
    return (
        f"name: lrsweep\nresources: {{time: 10m}}\n{modules}matrix: {{LR: {json.dumps(VALUES)}}}\n"
        "upload: [train.py]\ndownload: ['outputs/**']\nrun: python3 train.py\n"
    )


@pytest.mark.parametrize("site", list(SITES))
def test_sweep_failure_fetch_and_rerun(tmp_path: Path, site: str) -> None:
    shutil.copy(PROGRAM, tmp_path / "train.py")
    (tmp_path / "sweep.yaml").write_text(_spec(site))
    env = BEDS["24.11"].env(bed_env(tmp_path)) if site == "lumi24-bed" else bed_env(tmp_path)
    started = time.monotonic()
    r = aif(["submit", "sweep.yaml", "--site", site, *SITES[site], "--wait", "--timeout", "5m"], env, tmp_path, 400)
    took = time.monotonic() - started
    print(
        f"\n[{site}] submit --wait: exit {r.returncode} in {took:.1f} s\n--- stdout:\n{r.stdout}--- stderr:\n{r.stderr}"
    )
    assert r.returncode == 1, r.stderr
    job_id = r.stdout.split()[r.stdout.split().index("lrsweep") - 1]  # the table's ID column
    assert "FAILED (3 completed, 1 failed)" in r.stdout
    # the failed element in plain sight: index, values, exit code, the traceback's end, the rerun hint
    assert f"{job_id} lrsweep element 2 (LR=-1): FAILED exit 1" in r.stderr
    assert "| ValueError: learning rate must be positive, got -1.0" in r.stderr
    assert f"aifactory logs {job_id} --task 2 --stderr" in r.stderr
    assert f"aifactory rerun {job_id} --failed" in r.stderr

    # fetch: all 3 successful elements, each under its own name, each with its own values
    r = aif(["fetch", job_id, "--dest", "results", "--json"], env, tmp_path, 120)
    assert r.returncode == 0, r.stderr
    files = sorted(json.loads(r.stdout)["files"])
    print(f"[{site}] fetch: {files}")
    assert files == ["0_LR=0.1/outputs/rank0.json", "1_LR=0.01/outputs/rank0.json", "3_LR=0.001/outputs/rank0.json"]
    for name in files:
        got = json.loads((tmp_path / "results" / name).read_text())
        index, value = name.split("/")[0].split("_LR=")
        assert (got["lr"], got["element"]) == (float(value), index), got
        assert got["cwd"].endswith(f"/elements/{index}"), got  # it ran in its own directory

    # logs by values
    r = aif(["logs", job_id, "--task", "LR=-1", "--stderr"], env, tmp_path, 60)
    assert r.returncode == 0 and "bad learning rate -1.0" in r.stdout, r.stderr

    # rerun --failed: only element 2, with LR=-1, linked to the original
    r = aif(["rerun", job_id, "--failed", "--json"], env, tmp_path, 120)
    assert r.returncode == 0, r.stderr
    assert f"rerun of {job_id}, element 2 (LR=-1)" in r.stderr
    new = json.loads(r.stdout)["jobs"][0]
    print(f"[{site}] rerun --failed: {r.stderr.strip()}")
    assert new["id"] != job_id and new["array_size"] == 1
    r = aif(["wait", new["id"], "--json", "--timeout", "5m"], env, tmp_path, 400)
    assert r.returncode == 1, r.stderr  # LR=-1 fails again: the same values ran
    done = json.loads(r.stdout)["jobs"][0]
    assert [t["state"] for t in done["tasks"]] == ["FAILED"], done
    assert "element 0 (LR=-1): FAILED exit 1" in r.stderr
    r = aif(["logs", new["id"], "--stderr"], env, tmp_path, 60)
    assert "bad learning rate -1.0" in r.stdout
    r = aif(["status", new["id"], "--json"], env, tmp_path, 60)
    assert json.loads(r.stdout)["jobs"][0].get("rerun_of") == {"job": job_id, "elements": [2]}
