"""Scaffolding a profile from what a live cluster reports (recorded from the test bed)."""

from pathlib import Path

from aifactory_cli.service.sites import parse_partitions, split_sections
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
    text = "\n@@AIF-CHECK@@ version\nslurm 22.05.8\n@@AIF-CHECK@@ rc 0\n"
    assert split_sections(text)["version"] == ("slurm 22.05.8", 0)


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
