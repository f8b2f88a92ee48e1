"""Admin commands against the live test bed: `sites check` and `sites add --from-live`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.real.conftest import TESTBED_KEY

pytestmark = pytest.mark.real
KEY = TESTBED_KEY


def test_sites_check_testbed_passes(tb) -> None:
    r = tb("sites", "check", "testbed", "--json")
    assert r.code == 0, (r.stdout, r.stderr)
    report = json.loads(r.stdout)
    assert report["ok"]
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["slurm"]["detail"].startswith("slurm")
    assert checks["account"]["status"] == "ok" and checks["sacct"]["status"] == "ok"
    assert checks["partition standard-g"]["status"] == "ok"


def test_sites_check_reports_drift_one_line_each(tb, tmp_path: Path, aif_home: Path) -> None:
    profiles = aif_home / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "drifted.yaml").write_text(
        "extends: testbed\npartitions:\n"
        "  gpu-huge: {kind: gpu, max_time: '1-00:00:00'}\n"  # a partition the cluster lacks
        "  dev-g: {max_time: '06:00:00'}\n"  # the cluster says 03:00:00
        "  small-g: {gpus_per_node: 4}\n"  # its nodes have 8 (sinfo %G)
    )
    r = tb("sites", "check", "drifted")
    assert r.code == 1, (r.stdout, r.stderr)
    drift = [line for line in r.stdout.splitlines() if line.startswith("DRIFT")]
    assert len(drift) == 3, r.stdout
    assert any("gpus per node small-g" in line and "profile 4, cluster nodes have 8" in line for line in drift)
    assert any("gpu-huge" in line and "has no partition" in line for line in drift)
    assert any("dev-g" in line and "profile 06:00:00, cluster 03:00:00" in line for line in drift)


def test_sites_add_from_live(tb, aif_home: Path) -> None:
    r = tb("sites", "add", "mylive", "--from-live", "testbed", "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    assert Path(out["file"]) == aif_home / "profiles" / "mylive.yaml"
    assert out["profile"]["partitions"]["standard-g"]["gpus_per_node"] == 8
    assert tb("sites", "validate", out["file"]).code == 0
    assert tb("sites", "add", "mylive", "--from-live", "testbed").code == 2  # exists: refused without --force
    # it took over how the test bed is reached (key, known_hosts), so it can log in and check itself
    assert out["profile"]["ssh"]["identity_file"] == str(KEY)
    check = tb("sites", "check", "mylive", "--json")
    assert check.code == 0, (check.stdout, check.stderr)
