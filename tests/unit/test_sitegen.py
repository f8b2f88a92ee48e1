"""Scaffolding a profile from what a live cluster reports (recorded from the test bed)."""

from pathlib import Path

from aifactory_cli.sitecheck import parse_partitions, split_sections
from aifactory_cli.sitegen import partitions_from_live

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"


def test_partitions_from_recorded_scontrol() -> None:
    parts, facts = partitions_from_live(
        (DATA / "scontrol_partitions.txt").read_text(), (DATA / "scontrol_nodes.txt").read_text()
    )
    assert set(parts) == {"standard-g", "small-g", "dev-g", "standard", "small", "debug"}
    assert parts["standard-g"] == {
        "kind": "gpu",
        "whole_node": False,
        "max_time": "2-00:00:00",
        "default_time": "00:15:00",
        "gpus_per_node": 8,
        "cores_per_node": 64,
        "memory_per_node": "480G",
    }
    assert parts["debug"]["max_time"] == "00:30:00" and parts["debug"]["kind"] == "cpu"
    assert facts["gpu_models"] == ["mi250"]


def test_parse_partitions_and_sections() -> None:
    parts = parse_partitions((DATA / "scontrol_partitions.txt").read_text())
    assert parts["dev-g"]["MaxTime"] == "03:00:00"
    text = "\n@@AIF-CHECK@@ version\nslurm 22.05.8\n@@AIF-CHECK@@ rc 0\n"
    assert split_sections(text)["version"] == ("slurm 22.05.8", 0)
