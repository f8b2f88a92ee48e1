"""The library API (`import aifactory_cli as aif`) on the fake site of fakes.py: every call opens
a Service (here one reaching the fake transport, through api._service_factory) and closes it."""

from __future__ import annotations

import ast
import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from fakes import SITE, Session, fake_site, spec

import aifactory_cli as aif
from aifactory_cli import api, errors
from aifactory_cli.service.session import Service

SRC = Path(api.__file__).parent


@pytest.fixture
def session(aif_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    s = fake_site(tmp_path, monkeypatch)
    opened: list[Service] = []

    def factory(notify: Callable[[str], None]) -> Service:
        svc = Service(notify=notify, transport_factory=lambda site, loaded: s.fake)
        opened.append(svc)
        return svc

    monkeypatch.setattr(api, "_service_factory", factory)
    s.opened = opened  # type: ignore[attr-defined]
    return s


def test_submit_a_file_then_its_state_follows_slurm(session: Session, tmp_path: Path) -> None:
    job = aif.submit(spec(tmp_path, "hello"), site=SITE, account="project_465000002", qos="normal")
    slurm = session.fake.slurm
    (sid,) = slurm.jobs()
    assert (job.name, job.site, job.slurm_job_id, job.state) == ("hello", SITE, sid, "PENDING")
    assert job.ref == f"{SITE}:{sid}" and job.exit_code is None and job.tasks == [] and not job.done
    assert "#SBATCH --account=project_465000002" in (aif.get(job.id)._record.script or "")
    slurm.start(sid)
    assert job.state == "RUNNING"
    slurm.finish(sid, code=3)
    assert (job.state, job.exit_code, job.done) == ("FAILED", 3, True)
    polls = len(slurm.calls("squeue"))
    assert job.state == "FAILED" and len(slurm.calls("squeue")) == polls  # an ended job asks no site
    # every call closed its service: no store and no backend left open
    assert all(svc._store is None and not svc._backends for svc in session.opened)  # type: ignore[attr-defined]


def test_submit_passes_account_partition_qos(session: Session, tmp_path: Path) -> None:
    job = aif.submit(spec(tmp_path), site=SITE, account="project_465000009", partition="standard")
    script = aif.get(job.id)._record.script or ""  # what went to sbatch
    assert "#SBATCH --account=project_465000009" in script and "#SBATCH --partition=standard" in script


def test_state_is_asked_no_more_often_than_poll_interval(session: Session, tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    (profiles / "slowsite.yaml").write_text(
        (profiles / f"{SITE}.yaml").read_text().replace("poll_interval: 0", "poll_interval: 3600")
    )
    job = aif.submit(spec(tmp_path), site="slowsite")
    squeue = session.fake.slurm.calls
    before = len(squeue("squeue"))
    assert job.state == "PENDING"  # never polled yet: asked once
    session.fake.slurm.start(job.slurm_job_id or "")
    assert job.state == "PENDING" and job.slurm_job_id  # within poll_interval: the stored state
    assert len(squeue("squeue")) == before + 1
    assert job.refresh().state == "RUNNING"  # refresh() asks now


def test_a_dict_spec_is_written_nowhere_and_uploads_from_base_dir(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "input.txt").write_text("x\n")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    doc = {"name": "fromdict", "run": "cat input.txt", "upload": ["input.txt"], "resources": {"time": "5m"}}
    job = aif.submit(doc, site=SITE, base_dir=data)
    assert job.name == "fromdict" and job.state == "PENDING"
    assert (Path(job.workdir or "") / "input.txt").read_text() == "x\n"
    assert list(cwd.iterdir()) == [] and doc["upload"] == ["input.txt"]  # nothing written, dict untouched
    with pytest.raises(aif.BadInput) as info:  # relative to the current directory by default
        aif.submit(doc, site=SITE)
    assert "input.txt" in info.value.message


def test_matrix_gives_one_array_job_with_its_elements_as_tasks(session: Session, tmp_path: Path) -> None:
    job = aif.submit(spec(tmp_path, "sweep"), site=SITE, matrix={"LR": [0.1, 0.01], "BS": [32]})
    assert (
        len(session.fake.slurm.jobs()) == 1
        and job.array_size == 2
        and "--array=0-1" in (api.get(job.id)._record.script or "")
    )
    state = job.state  # (the fake squeue knows no array elements: one state for the job)
    assert [(t.index, t.values, t.state) for t in job.tasks] == [
        (0, {"LR": "0.1", "BS": "32"}, state),
        (1, {"LR": "0.01", "BS": "32"}, state),
    ]
    explicit = aif.submit(spec(tmp_path, "two"), site=SITE, matrix=[{"LR": 1}, {"LR": 2}, {"LR": 3}])
    assert [t.values for t in explicit.tasks] == [{"LR": "1"}, {"LR": "2"}, {"LR": "3"}]
    with pytest.raises(aif.SpecError, match="non-empty list"):
        aif.submit(spec(tmp_path), site=SITE, matrix={"LR": []})


def test_wait_returns_the_final_state_or_raises_wait_timeout(session: Session, tmp_path: Path) -> None:
    job = aif.submit(spec(tmp_path), site=SITE)
    with pytest.raises(aif.WaitTimeout) as info:
        job.wait(timeout=0)
    assert "1 job(s) still not finished" in info.value.message and info.value.hint
    assert isinstance(info.value, aif.AifactoryError) and info.value.exit_code == errors.EXIT_TIMEOUT
    session.fake.slurm.finish(job.slurm_job_id or "")
    assert job.wait(timeout=30) == "COMPLETED" and job.exit_code == 0


def test_logs_follow_fetch(session: Session, tmp_path: Path) -> None:
    job = aif.submit(spec(tmp_path, "out", 'run: echo hi\ndownload: ["res/*.txt"]\n'), site=SITE)
    workdir = Path(job.workdir or "")
    (workdir / "stdout.log").write_text("line one\nline two\nno newline")
    (workdir / "stderr.log").write_text("oops é\n")
    (workdir / "res").mkdir()
    (workdir / "res" / "a.txt").write_text("A")
    (workdir / "res" / "b.bin").write_text("B")
    assert job.logs() == "line one\nline two\nno newline" and job.logs(stderr=True) == "oops é\n"
    session.fake.slurm.finish(job.slurm_job_id or "")
    assert list(job.follow(interval=0)) == ["line one\n", "line two\n", "no newline"]
    got = job.fetch(dest=tmp_path / "results")
    assert got == [tmp_path / "results" / "res" / "a.txt"] and got[0].read_text() == "A"
    with pytest.raises(aif.BadInput, match="not an array"):
        job.logs(task=1)


def test_cancel_and_jobs_and_get(session: Session, tmp_path: Path) -> None:
    # names that cannot be the start of a hex id: a name "b" was ambiguous with an id starting with b
    a = aif.submit(spec(tmp_path, "job-a"), site=SITE)
    b = aif.submit(spec(tmp_path, "job-b"), site=SITE)
    assert b.cancel() == "CANCELLED" and session.fake.slurm.calls("scancel") == [[b.slurm_job_id]]
    assert sorted(j.name for j in aif.jobs()) == ["job-a", "job-b"] and aif.jobs(site="local") == []
    assert aif.jobs(state="CANCELLED") == [b] and set(aif.jobs(state=["PENDING", "CANCELLED"])) == {a, b}
    assert aif.get(f"{SITE}:{a.slurm_job_id}") == a and aif.get("job-b").id == b.id and aif.get(a.id).name == "job-a"
    with pytest.raises(aif.NotFound) as info:
        aif.get("nosuchjob")
    assert info.value.message and info.value.exit_code == errors.EXIT_NOT_FOUND
    with pytest.raises(aif.BadInput, match="unknown state 'DONE'"):
        aif.jobs(state="done")


def test_plan_and_render(session: Session, tmp_path: Path) -> None:
    # a start later than now on any day the suite runs (a fixed date ranked differently once it passed)
    later = (dt.datetime.now() + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    session.fake.slurm.set(test_only_start=later)
    rows = aif.plan(spec(tmp_path), sites=[SITE, "local"])
    assert [r.site for r in rows] == ["local", SITE]  # ranked as `aifactory plan` ranks: soonest start first
    assert (rows[1].site, rows[1].ok, rows[1].start) == (SITE, True, later)
    assert isinstance(rows[0], aif.PlanRow) and rows[0].ok
    script = aif.render(spec(tmp_path, "r"), site=SITE, account="project_465000003")
    assert script.startswith("#!") and "#SBATCH --account=project_465000003" in script
    from_dict = aif.render({"name": "d", "run": "echo hi", "resources": {"time": "5m"}}, site=SITE)
    assert "#SBATCH --job-name=d" in from_dict
    assert session.fake.slurm.jobs() == {} and aif.jobs() == []  # nothing sent, nothing recorded


def test_plan_takes_a_dict_spec_and_a_matrix(session: Session, tmp_path: Path) -> None:
    session.fake.slurm.set(test_only_start="2026-12-01T08:00:00")
    doc = {"name": "d", "run": "echo $LR", "resources": {"time": "5m"}}
    (row,) = aif.plan(doc, sites=[SITE], matrix={"LR": [0.1, 0.01]})
    assert (row.site, row.ok, row.start) == (SITE, True, "2026-12-01T08:00:00")
    assert len(session.fake.slurm.calls("sbatch")) == 1  # the --test-only, nothing submitted
    with pytest.raises(aif.BadInput, match="--prefer 'soon'"):
        aif.plan(doc, sites=[SITE], prefer="soon")
    assert session.fake.slurm.jobs() == {} and aif.jobs() == []


def test_submit_to_auto_lets_the_broker_choose(
    session: Session, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    session.fake.slurm.set(test_only_start="2026-12-01T08:00:00")
    with caplog.at_level(logging.INFO, logger="aifactory_cli"):
        job = aif.submit({"name": "auto", "run": "echo hi", "resources": {"time": "5m"}}, site="auto", sites=[SITE])
    assert job.site == SITE and job.slurm_job_id in session.fake.slurm.jobs()
    assert any(f"site {SITE}: chose" in r.getMessage() for r in caplog.records)
    with pytest.raises(aif.BadInput, match="sites= is for site='auto'"):
        aif.submit(spec(tmp_path), site=SITE, sites=[SITE])
    with pytest.raises(aif.BadInput, match="--prefer"):
        aif.submit(spec(tmp_path), site="auto", sites=[SITE], prefer="fast")
    assert len(session.fake.slurm.jobs()) == 1  # refusals submitted nothing


def test_errors_carry_message_and_hint(session: Session, tmp_path: Path) -> None:
    with pytest.raises(aif.SpecError) as info:
        aif.submit({"name": "x", "run": "echo", "resources": {"tiem": "5m"}}, site=SITE)
    assert isinstance(info.value, aif.BadInput) and "tiem" in info.value.message
    with pytest.raises(aif.BadInput) as missing:
        aif.submit(tmp_path / "nope.yaml", site=SITE)
    assert "not found" in missing.value.message and missing.value.hint == "check the path"
    with pytest.raises(aif.NotFound):
        aif.render(spec(tmp_path), site="nosuchsite")
    assert aif.RemoteError is errors.RemoteError and aif.AifactoryError is errors.AifactoryError


def test_nothing_is_printed_notices_go_to_logging(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aifactory_cli")
    job = aif.submit(spec(tmp_path), site=SITE)
    job.cancel()
    job.cancel()
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert f"cancel sent for {job.id} on {SITE}" in caplog.messages
    assert any("already ended" in m for m in caplog.messages)


def test_the_package_names_load_lazily_and_match_the_stub() -> None:
    def names(path: Path) -> list[str]:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__all__":
                return list(ast.literal_eval(node.value))
        raise AssertionError(f"no __all__ in {path}")

    assert names(SRC / "__init__.py") == names(SRC / "__init__.pyi") == sorted(aif.__all__)
    for name in aif.__all__:
        assert getattr(aif, name) is not None
    assert aif.jobs.model.Job.__name__ == "Job"  # still the subpackage, and callable as aif.jobs()
    assert (SRC / "py.typed").is_file()
    with pytest.raises(AttributeError):
        aif.nonexistent  # noqa: B018
