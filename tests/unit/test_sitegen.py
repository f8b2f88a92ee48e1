"""Scaffolding a profile from what a live cluster reports (recorded from the test bed)."""

from pathlib import Path

import pytest
from recorded import VERSIONS, Recording

from aifactory_cli.scheduler.slurm_site import (
    check_command,
    live_command,
    parse_nodes,
    parse_partitions,
    parse_test_only,
    parse_usage,
    split_live_output,
    split_sections,
)
from aifactory_cli.sites.scaffold import partitions_from_live

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
    text = "\n@@AIF@@ version\nslurm 22.05.8\n@@AIF@@ rc 0\n\n@@AIF@@ accounts\nsacctmgr: error\n@@AIF@@ rc 1\n"
    assert split_sections(text) == {"version": ("slurm 22.05.8", 0), "accounts": ("sacctmgr: error", 1)}
    command = check_command()
    assert [
        command.index(w) for w in ("sbatch --version", "scontrol show partition", "sacctmgr", "sacct --")
    ] == sorted(command.index(w) for w in ("sbatch --version", "scontrol show partition", "sacctmgr", "sacct --"))
    # each check (with gres, and the three feature probes of scheduler.slurm_site): its errors are its answer
    assert command.count("2>&1") == 8


def test_live_output_split_and_nodes() -> None:
    parts = (DATA / "scontrol_partitions.txt").read_text()
    nodes = (DATA / "scontrol_nodes.txt").read_text()
    text = f"banner\n\n@@AIF@@ partitions\n{parts}\n@@AIF@@ rc 0\n\n@@AIF@@ nodes\n{nodes}\n@@AIF@@ rc 0\n"
    assert split_live_output(text) == (parts, nodes)
    assert split_live_output(text.replace("@@AIF@@ rc 0\n\n@@AIF@@ nodes", "@@AIF@@ rc 1\n\n@@AIF@@ nodes")) is None
    assert split_live_output(text.split("@@AIF@@ nodes")[0]) is None  # cut off: not a partial answer
    assert "scontrol show node --oneliner" in live_command()
    assert parse_nodes(nodes)["nid005000"]["Gres"].startswith("gpu:mi250:8")


@pytest.mark.parametrize("version", VERSIONS)
def test_plan_and_usage_parsers_on_recorded_output(version: str) -> None:
    est = parse_test_only(Recording(version).text("sbatch_test_only.txt"))
    assert est is not None and est["partition"] == "small-g" and est["nodes"] == "nid005000"
    assert parse_test_only("sbatch: error: Batch job submission failed: Invalid account") is None
    rows = parse_usage(Recording(version).text("sacct_usage.txt"))
    assert rows and all(r.nodes >= 1 and r.seconds >= 0 for r in rows)
    gpu = [r for r in rows if "gres/gpu" in r.tres]
    assert gpu and all(r.partition.endswith("-g") for r in gpu) and gpu[0].tres["cpu"].isdigit()
    assert parse_usage("JobID|Partition|NNodes|ElapsedRaw|AllocTRES|State\n1|p|x|5|cpu=1|COMPLETED\n") == []


def test_partition_drift_against_recorded_scontrol(tmp_path: Path, aif_home: Path) -> None:
    from aifactory_cli.service.sites import partition_drift
    from aifactory_cli.sites.profile import load_profile_file

    live = parse_partitions((DATA / "scontrol_partitions.txt").read_text())
    path = tmp_path / "drifty.yaml"
    path.write_text(
        "version: 1\nextends: testbed\npartitions:\n"
        "  standard-g: {min_nodes: 2}\n"  # the cluster takes 1-node jobs there
        "  dev-g: {max_time: '06:00:00'}\n"  # the cluster says 03:00:00
        # a partition + QoS entry: its limits are the QoS's, so the partition's are not compared
        "  small-g-long: {kind: gpu, slurm_name: small-g, qos: long, max_nodes: 1, max_time: '7-00:00:00'}\n"
    )
    checks = partition_drift(load_profile_file(path).profile, live)
    drift = sorted((c, d) for c, s, d in checks if s == "drift")
    assert drift == [
        ("partition dev-g", "max_time: profile 06:00:00, cluster 03:00:00"),
        ("partition standard-g", "min_nodes: profile 2, cluster 1"),
    ]
    status = {c: (s, d) for c, s, d in checks}
    assert status["partition small-g-long (small-g)"] == (
        "ok",
        "limits come from QoS long (not compared; see `sacctmgr show qos long`)",
    )
    assert status["partition small-g"][0] == "ok"


def test_account_check_with_and_without_suffixes() -> None:
    from aifactory_cli.service.sites import account_check

    mine = ["project_465000001", "project_465000002"]
    assert account_check("project_465000001", [], mine)[0] == "ok"
    status, detail = account_check("project_465000009", [], mine)
    assert status == "fail" and "'project_465000009' is NOT among your accounts" in detail
    # Deucalion: the project id (or a suffixed form of it) is checked through <id>g / <id>x
    deu = ["f2025deucaliong", "other"]
    for given in ("f2025deucalion", "f2025deucaliong", "f2025deucalionx"):
        status, detail = account_check(given, ["g", "x"], deu)
        assert status == "ok", detail
        assert detail.startswith("f2025deucaliong among your accounts; not f2025deucalionx"), detail
    status, detail = account_check("f2025deucalion", ["g", "x"], ["other"])
    assert status == "fail" and "none of f2025deucaliong, f2025deucalionx" in detail
