"""`sites validate` names every problem of a profile in one run (issue 14)."""

from __future__ import annotations

from pathlib import Path


def test_schema_problems_all_at_once(cli, tmp_path: Path) -> None:
    bad = tmp_path / "mylumi.yaml"
    bad.write_text("extends: lumi\nssh:\n  hots: x\n  port: notaport\npoll_intervall: 3\n")
    r = cli("sites", "validate", str(bad))
    assert r.code == 2, r.stderr
    assert "ssh.hots" in r.stderr and "ssh.port" in r.stderr and "poll_intervall" in r.stderr


def test_site_level_problems_all_at_once(cli, tmp_path: Path) -> None:
    bad = tmp_path / "mysite.yaml"
    bad.write_text("version: 1\nscheduler: slurm\npartitions:\n  a: {kind: gpu}\n  b: {kind: gpu}\n")
    r = cli("sites", "validate", str(bad))
    assert r.code == 2, r.stderr
    assert "'a', 'b'" in r.stderr and "no 'gpu' block" in r.stderr, r.stderr
