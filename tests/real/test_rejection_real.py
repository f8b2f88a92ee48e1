"""A job Slurm refuses (3 nodes on jupiter-bed's 2-node booster partition, which the JUPITER profile
allows): exit 2 with Slurm's own words, whatever they are ("More processors requested than
permitted" is in no keyword list), nothing queued, and no job dir left that `sync` could bring back."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest

from tests.real.bedjobs import aif, bed_env

pytestmark = pytest.mark.real


def test_a_refused_job_is_exit_2_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_text(
        "name: toobig\nresources: {nodes: 3, gpus_per_node: 4, time: 5m}\nrun: hostname\n"
    )
    env = bed_env(tmp_path)
    r = aif(["submit", "big.yaml", "--site", "jupiter-bed", "-A", "exalab"], env, tmp_path, 120)
    print(f"\nsubmit: exit {r.returncode}: {r.stderr.strip()}")
    assert r.returncode == 2, r.stderr
    assert "Slurm rejected the job: More processors requested than permitted" in r.stderr
    assert "interrupted" not in r.stderr
    r = aif(["list", "--json"], env, tmp_path, 60)
    assert json.loads(r.stdout)["jobs"] == []
    assert glob.glob("/e/scratch/exalab/hpcuser/aifactory/toobig-*") == []  # the bed's JUPITER scratch
