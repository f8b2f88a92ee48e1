"""The broker on two test-bed sites over the same cluster: one whose partition is full of queued
work. `plan` ranks them by the `sbatch --test-only` start estimate; `submit --site auto` picks the
sooner one and says why."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.real.conftest import TESTBED_ACCOUNT, TESTBED_SSH_CONFIG

pytestmark = pytest.mark.real
SSH = ["ssh", "-F", str(TESTBED_SSH_CONFIG), "testbed"]
OFF = "{auto: false}"


@pytest.fixture
def two_sites(aif_home: Path) -> None:
    """tb-busy runs CPU jobs on `standard` (the CPU nodes), tb-free on `small-g` (the GPU nodes)."""
    profiles = aif_home / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "tb-busy.yaml").write_text(
        f"extends: testbed\npartitions:\n  standard-g: {OFF}\n  small-g: {OFF}\n  dev-g: {OFF}\n"
        f"  small: {OFF}\n  debug: {OFF}\n"
    )
    (profiles / "tb-free.yaml").write_text(
        f"extends: testbed\npartitions:\n  standard-g: {OFF}\n  dev-g: {OFF}\n  standard: {OFF}\n"
        f"  small: {OFF}\n  debug: {OFF}\n"
    )


@pytest.fixture
def cpu_nodes_full():
    script = "#!/bin/bash\n#SBATCH --output=/dev/null\nsleep 600\n"
    ids = []
    for _ in range(2):
        out = subprocess.run(
            [
                *SSH,
                f"sbatch --parsable --account={TESTBED_ACCOUNT} --partition=standard --exclusive --nodes=1 --time=20",
            ],
            input=script,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        ids.append(out)
    # `sbatch --test-only` estimates a start only from running jobs: queued fillers would not count
    deadline = time.monotonic() + 60
    while True:
        states = subprocess.run(
            [*SSH, f"squeue -h -j {','.join(ids)} -o %T"], capture_output=True, text=True, check=False
        ).stdout.split()
        if states == ["RUNNING", "RUNNING"]:
            break
        if time.monotonic() > deadline:
            subprocess.run([*SSH, "scancel " + " ".join(ids)], check=False)
            pytest.fail(f"the two filler jobs {ids} are not both RUNNING after 60 s: {states}")
        time.sleep(0.5)
    yield ids
    subprocess.run([*SSH, "scancel " + " ".join(ids)], check=False)


def test_plan_ranks_by_start_and_auto_picks_the_sooner(tb, two_sites, tmp_path: Path, cpu_nodes_full) -> None:
    spec = tmp_path / "cpu.yaml"
    spec.write_text("name: brokered\nrun: echo ran\nresources: {cpus_per_task: 4, time: 10m}\n")
    r = tb("plan", str(spec), "--sites", "tb-busy,tb-free", "--json")
    assert r.code == 0, r.stderr
    rows = json.loads(r.stdout)["sites"]
    assert [x["site"] for x in rows] == ["tb-free", "tb-busy"]
    free, busy = rows
    assert free["ok"] and busy["ok"]
    assert (free["partition"], busy["partition"]) == ("small-g", "standard")
    t_free = dt.datetime.fromisoformat(free["start"])
    t_busy = dt.datetime.fromisoformat(busy["start"])
    assert t_busy - t_free > dt.timedelta(minutes=5)  # behind the two 20-minute fillers
    assert free["charge"] is not None and busy["charge"] is not None
    r = tb("submit", str(spec), "--site", "auto", "--sites", "tb-busy,tb-free", "--wait", "--json")
    assert r.code == 0, r.stderr
    assert "chose tb-free (small-g)" in r.stderr and "tb-busy: starts" in r.stderr
    assert json.loads(r.stdout)["jobs"][0]["site"] == "tb-free"


def test_plan_rules_out_sites_by_constraint(tb, two_sites, tmp_path: Path) -> None:
    spec = tmp_path / "nv.yaml"
    spec.write_text("run: nvidia-smi\nrequires: {gpu_vendor: nvidia}\nresources: {gpus_per_node: 1, time: 10m}\n")
    r = tb("plan", str(spec), "--sites", "tb-free", "--json")
    row = json.loads(r.stdout)["sites"][0]
    assert not row["ok"] and "requires nvidia GPUs" in row["reason"]


def test_usage_from_sacct(tb) -> None:
    # a job of its own, so the count does not depend on what ran before on this test bed
    done = tb("submit", str(REPO / "examples" / "hello.yaml"), "--site", "testbed", "--wait", "--timeout", "120")
    assert done.code == 0, done.stderr
    deadline = time.monotonic() + 30  # slurmdbd records finished jobs with a lag
    while True:
        r = tb("usage", "--site", "testbed", "--json")
        assert r.code == 0, r.stderr
        report = json.loads(r.stdout)
        if report.get("jobs") or time.monotonic() > deadline:
            break
        time.sleep(1)
    # the test bed has no lumi-allocations: aifactory falls back to sacct and the billing rules
    assert report["source"].startswith("sacct since") and report["jobs"] > 0
    assert set(report["charged"]) <= {"GPU-hours", "core-hours"}
