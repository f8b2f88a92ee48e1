"""`render` and `submit --dry-run` in-process: the script a built-in profile makes of a spec, its
warnings and its charge; nothing is sent to a site and no job is recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import SITE, Session, fake_site, spec

from aifactory_cli.errors import NotFound, SpecError
from aifactory_cli.service import render
from aifactory_cli.service.render import Overrides
from aifactory_cli.service.session import Service


def _directives(script: str) -> list[str]:
    return [line[len("#SBATCH ") :] for line in script.splitlines() if line.startswith("#SBATCH ")]


@pytest.fixture
def svc(aif_home: Path):
    with Service() as service:
        yield service


def test_render_a_cpu_job_for_lumi(svc: Service, tmp_path: Path) -> None:
    preview = render.render(svc, spec(tmp_path), "lumi", Overrides())
    assert preview.site == "lumi" and preview.spec == str(tmp_path / "hello.yaml")
    assert preview.script.startswith("#!/bin/bash\n")
    d = _directives(preview.script)
    assert d[:4] == ["--job-name=hello", "--partition=small", "--account=ACCOUNT_NOT_SET", "--nodes=1"]
    assert {"--ntasks-per-node=1", "--cpus-per-task=1", "--time=00:05:00", "--output=stdout.log"} <= set(d)
    assert d[-1].startswith("--comment=aifactory:")
    assert "module load LUMI/25.03 partition/C" in preview.script
    launch = (
        """srun --nodes=1 --ntasks=1 --cpus-per-task=1 --kill-on-bad-exit=1 """
        """bash -c "$AIF_TASK" aif-task bash -c 'echo hi'"""
    )
    assert launch in preview.script
    # no account: a placeholder and a warning that says how to set one
    (warning,) = preview.warnings
    assert warning.startswith("no account set for lumi: the script shows ACCOUNT_NOT_SET")
    assert preview.resolved["partition"] == "small" and preview.resolved["account"] == "ACCOUNT_NOT_SET"
    assert preview.resolved["time"] == "00:05:00"
    assert preview.charge_json == {
        "amount": 0.0833, "unit": "core-hours", "how": "1 core x 1 node x 5 min",
    }  # fmt: skip
    assert preview.charge is not None and preview.charge.startswith("0.08 core-hours (1 core x 1 node x 5 min)")
    assert preview.to_json()["script"] == preview.script and preview.to_json()["charge"] == preview.charge_json
    assert svc.store.query() == []  # nothing recorded


def test_render_a_gpu_job_with_an_account(svc: Service, tmp_path: Path) -> None:
    path = tmp_path / "gpu.yaml"
    path.write_text("name: gpu\nrun: rocm-smi\nresources: {gpus_per_node: 8, time: 2h}\n")
    preview = render.render(svc, path, "lumi", Overrides(account="project_465000042"))
    d = _directives(preview.script)
    assert "--partition=standard-g" in d and "--gpus-per-node=8" in d and "--account=project_465000042" in d
    assert "--time=02:00:00" in d and "ACCOUNT_NOT_SET" not in preview.script
    assert "module load LUMI/25.03 partition/G" in preview.script
    assert preview.warnings == []
    # standard-g: 4 GPU-hours per node-hour, 1 node, 2 h
    assert preview.charge_json is not None
    assert (preview.charge_json["amount"], preview.charge_json["unit"]) == (8.0, "GPU-hours")


def test_render_on_local_has_no_charge(svc: Service, tmp_path: Path) -> None:
    preview = render.render(svc, spec(tmp_path), None, Overrides())  # the default site
    assert preview.site == "local" and preview.charge is None and preview.charge_json is None
    assert "echo hi" in preview.script


def test_render_reports_bad_specs_and_sites(svc: Service, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        render.render(svc, spec(tmp_path), "nosuchsite", Overrides())
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nrun: true\nresources: {nodes: many}\n")
    with pytest.raises(SpecError, match="nodes"):
        render.render(svc, bad, "lumi", Overrides())


@pytest.fixture
def session(aif_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    return fake_site(tmp_path, monkeypatch)


def test_dry_run_renders_every_spec_and_sends_nothing(session: Session, tmp_path: Path) -> None:
    first = session()
    job = first.submit(first.prepare(spec(tmp_path, "prep"), SITE))  # a job to depend on
    first.close()
    commands = list(session.fake.commands)

    svc = session()
    a, b = spec(tmp_path, "a"), tmp_path / "b.yaml"
    b.write_text("name: b\nrun: echo b\nresources: {partition: debug, time: 10m}\n")
    previews = render.dry_run(svc, [a, b], SITE, Overrides(), after=[job.id])
    assert [p.spec for p in previews] == [str(a), str(b)]
    da, db = _directives(previews[0].script), _directives(previews[1].script)
    assert "--account=project_465000001" in da and "--partition=small" in da and "--job-name=a" in da
    assert "--partition=debug" in db and "--time=00:10:00" in db
    # `after` applies to the first spec only
    assert f"--dependency=afterok:{job.slurm_job_id}" in da
    assert not any(d.startswith("--dependency") for d in db)
    assert session.fake.commands == commands and [j.id for j in svc.store.query()] == [job.id]
    svc.close()


def test_dry_run_is_all_or_nothing(session: Session, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nrun: true\nresources: {time: forever}\n")
    with pytest.raises(SpecError):
        render.dry_run(session(), [spec(tmp_path), bad], SITE, Overrides())
    assert session.fake.commands == []
