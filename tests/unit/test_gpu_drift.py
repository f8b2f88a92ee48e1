"""`sites check` compares GPUs per node with what the cluster's nodes have (sinfo %G), on output
recorded from the test bed (Slurm 22.05: tests/data/slurm/sinfo_gres_22_05.txt)."""

from __future__ import annotations

from pathlib import Path

from aifactory_cli.scheduler.slurm_site import gres_gpus, parse_partition_gpus
from aifactory_cli.service.sites import gpu_drift
from aifactory_cli.sites.profile import load_profile

RECORDED = Path(__file__).parent.parent / "data" / "slurm" / "sinfo_gres_22_05.txt"


def test_gres_counts() -> None:
    assert gres_gpus("gpu:mi250:8(S:0-7)") == (8, "mi250")
    assert gres_gpus("gpu:4") == (4, None)
    assert gres_gpus("(null)") == (0, None)
    assert gres_gpus("gpu:a100:2,gpu:v100:2") == (4, "a100")


def test_lumi_matches_and_a_changed_count_is_drift() -> None:
    live = parse_partition_gpus(RECORDED.read_text())
    assert live["standard-g"] == {8} and live["standard"] == {0}
    lumi = load_profile("lumi").profile
    rows = {check: (status, detail) for check, status, detail in gpu_drift(lumi, live)}
    assert rows["gpus per node standard-g"] == ("ok", "8")
    assert "gpus per node standard" not in rows  # CPU partitions are not compared
    live["small-g"] = {8, 4}
    rows = {check: (status, detail) for check, status, detail in gpu_drift(lumi, live)}
    assert rows["gpus per node small-g"] == ("drift", "profile 8, cluster nodes have 4, 8")
