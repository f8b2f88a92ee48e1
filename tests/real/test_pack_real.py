"""`pack: true` on JUPITER (the test bed's jupiter-bed: whole nodes of 4 GPUs, gres): a 6-element
sweep of 1-GPU elements runs as ONE Slurm job on 2 nodes, every element its own job step on its own
GPU (JSC's `srun --exclusive -n 1 --gres=gpu:1 ... &`), with its own directory, logs and exit code;
a failing element is FAILED with its values and stderr, the others COMPLETED, `fetch` brings each
element's files back, and the charge is 2 nodes, not 6."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.real.bedjobs import aif, bed_env

pytestmark = pytest.mark.real
PROGRAM = REPO / "tests" / "data" / "sweep" / "train.py"
VALUES = ["0.1", "0.01", "-1", "0.001", "0.5", "0.05"]
SPEC = (
    "name: packed\nresources: {gpus_per_node: 1, time: 10m}\nmodules: [pytorch/2.13.0-cpu]\n"
    f"matrix: {{LR: {json.dumps(VALUES)}}}\npack: true\nupload: [train.py]\ndownload: ['outputs/**']\n"
    "run: python3 train.py\n"
)
ARGS = ["--site", "jupiter-bed", "-A", "exalab"]


def test_a_packed_sweep_runs_as_steps_of_one_job(tmp_path: Path) -> None:
    shutil.copy(PROGRAM, tmp_path / "train.py")
    (tmp_path / "packed.yaml").write_text(SPEC)
    env = bed_env(tmp_path)

    r = aif(["render", "packed.yaml", *ARGS], env, tmp_path, 60)
    assert r.returncode == 0, r.stderr
    assert "#SBATCH --nodes=2" in r.stdout and "#SBATCH --array" not in r.stdout
    assert "srun --nodes=1 --ntasks=1 --cpus-per-task=72 --exclusive --gres=gpu:1" in r.stdout
    assert "x 2 nodes x 10 min" in r.stderr, r.stderr  # the charge: 2 whole nodes, once

    r = aif(["submit", "packed.yaml", *ARGS, "--wait", "--timeout", "5m", "--json"], env, tmp_path, 400)
    print(f"\nsubmit --wait: exit {r.returncode}\n--- stderr:\n{r.stderr}")
    assert r.returncode == 1, r.stderr
    job = json.loads(r.stdout)["jobs"][0]
    assert job["array_size"] == 6 and job["state"] == "FAILED"
    assert [t["state"] for t in job["tasks"]] == [
        "COMPLETED",
        "COMPLETED",
        "FAILED",
        "COMPLETED",
        "COMPLETED",
        "COMPLETED",
    ]
    assert job["tasks"][2]["exit_code"] == 1
    assert f"{job['id']} packed element 2 (LR=-1): FAILED exit 1" in r.stderr
    assert "| ValueError: learning rate must be positive, got -1.0" in r.stderr

    r = aif(["fetch", job["id"], "--dest", "results", "--json"], env, tmp_path, 120)
    assert r.returncode == 0, r.stderr
    files = sorted(json.loads(r.stdout)["files"])
    assert [f.split("/")[0] for f in files] == ["0_LR=0.1", "1_LR=0.01", "3_LR=0.001", "4_LR=0.5", "5_LR=0.05"]
    seen = [json.loads((tmp_path / "results" / f).read_text()) for f in files]
    for s in seen:
        print(f"element {s['element']}: {s['env']}")
    steps = {s["env"]["SLURM_STEP_ID"] for s in seen}
    assert len(steps) == 5, seen  # one job step per element
    per_node: dict[str, list[str]] = {}
    for s in seen:
        per_node.setdefault(s["env"]["SLURMD_NODENAME"], []).append(s["env"]["CUDA_VISIBLE_DEVICES"])
        assert s["env"]["CUDA_VISIBLE_DEVICES"] and "," not in s["env"]["CUDA_VISIBLE_DEVICES"], s  # one GPU each
    assert set(per_node) == {"gn001", "gn002"} and all(len(v) <= 4 for v in per_node.values()), per_node
    # each element's rendezvous is its own node, on its own port
    assert len({s["env"]["MASTER_PORT"] for s in seen}) == 5
    r = aif(["status", job["id"], "--json"], env, tmp_path, 60)
    sacct_like = json.loads(r.stdout)["jobs"][0]
    assert sacct_like["slurm_job_id"] == job["slurm_job_id"] and "_" not in job["slurm_job_id"]
