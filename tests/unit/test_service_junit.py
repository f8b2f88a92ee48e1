"""JUnit XML of waited-for jobs (`wait --junit`), in-process: the XML parsed back, one test case
per job or per array element, failures carrying the tail of the job's stderr from the (fake) site."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from fakes import SITE, Session, fake_site

from aifactory_cli.jobs.model import Job, Task
from aifactory_cli.service import junit

T0 = "2026-11-30T10:00:00+00:00"


@pytest.fixture
def session(aif_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    return fake_site(tmp_path, monkeypatch)


def _job(session: Session, name: str, state: str, **kw: object) -> Job:
    workdir = session.fake.home / "aifactory" / name
    workdir.mkdir(parents=True, exist_ok=True)
    fields: dict = dict(
        id=f"id-{name}", token="t" * 32, name=name, site=SITE, state=state, created_at=T0, updated_at=T0,
        slurm_job_id="1234", workdir=str(workdir), started_at=T0, ended_at="2026-11-30T10:01:30+00:00",
    )  # fmt: skip
    fields.update(kw)
    return Job(**fields)


def _cases(path: Path) -> tuple[ET.Element, dict[str, ET.Element]]:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = list(root)
    return suite, {c.get("name", ""): c for c in suite.findall("testcase")}


def _props(case: ET.Element) -> dict[str, str | None]:
    return {p.get("name", ""): p.get("value") for p in case.findall("properties/property")}


def test_completed_and_failed_jobs(session: Session, tmp_path: Path) -> None:
    ok = _job(session, "ok", "COMPLETED", exit_code=0)
    bad = _job(session, "bad", "FAILED", exit_code=3, reason="NonZeroExitCode", slurm_job_id="1235")
    Path(bad.workdir or "", "stderr.log").write_text("Traceback ...\nValueError: boom\n")
    out = tmp_path / "reports" / "junit.xml"  # its dir is created
    junit.write_junit(session(), [ok, bad], out)

    assert out.read_text().startswith("<?xml version='1.0' encoding='utf-8'?>")
    suite, cases = _cases(out)
    assert suite.get("name") == "aifactory"
    counts = [suite.get(k) for k in ("tests", "failures", "errors", "skipped", "time")]
    assert counts == ["2", "1", "0", "0", "180.0"]
    assert list(cases) == ["ok", "bad"]
    assert cases["ok"].get("classname") == f"aifactory.{SITE}" and cases["ok"].get("time") == "90.0"
    assert cases["ok"].find("failure") is None
    assert _props(cases["ok"]) == {
        "id": "id-ok", "slurm_job_id": "1234", "state": "COMPLETED", "exit_code": "0", "workdir": ok.workdir,
    }  # fmt: skip
    failure = cases["bad"].find("failure")
    assert failure is not None
    assert failure.get("type") == "FAILED" and failure.get("message") == "FAILED exit 3 (NonZeroExitCode)"
    assert failure.text == "Traceback ...\nValueError: boom\n"  # read from the job dir on the site
    assert _props(cases["bad"])["slurm_job_id"] == "1235"


def test_array_jobs_have_one_case_per_element(session: Session, tmp_path: Path) -> None:
    tasks = [
        Task(0, "COMPLETED", exit_code=0, started_at=T0, ended_at="2026-11-30T10:00:10+00:00"),
        Task(1, "FAILED", exit_code=1, started_at=T0, ended_at="2026-11-30T10:00:20+00:00"),
        Task(2, "TIMEOUT", reason="TimeLimit", started_at=T0),  # never ended: no time
    ]
    job = _job(session, "sweep", "FAILED", array_size=3, tasks=tasks)
    Path(job.workdir or "", "stderr.1.log").write_text("element 1 failed\n")
    out = tmp_path / "junit.xml"
    junit.write_junit(session(), [job], out)
    suite, cases = _cases(out)
    assert list(cases) == ["sweep[0]", "sweep[1]", "sweep[2]"]
    assert (suite.get("tests"), suite.get("failures"), suite.get("time")) == ("3", "2", "30.0")
    assert [c.get("time") for c in cases.values()] == ["10.0", "20.0", "0.0"]
    assert cases["sweep[0]"].find("failure") is None
    f1, f2 = cases["sweep[1]"].find("failure"), cases["sweep[2]"].find("failure")
    assert f1 is not None and f2 is not None
    assert f1.get("message") == "FAILED exit 1" and f1.text == "element 1 failed\n"  # that element's log
    assert f2.get("message") == "TIMEOUT (TimeLimit)" and f2.get("type") == "TIMEOUT" and f2.text is None
    assert _props(cases["sweep[2]"])["exit_code"] == ""


def test_the_failure_text_is_the_tail_of_stderr(session: Session, tmp_path: Path) -> None:
    job = _job(session, "noisy", "OUT_OF_MEMORY")
    Path(job.workdir or "", "stderr.log").write_bytes(b"x" * 10_000 + b"\xff the end")
    junit.write_junit(session(), [job], tmp_path / "j.xml")
    _, cases = _cases(tmp_path / "j.xml")
    failure = cases["noisy"].find("failure")
    assert failure is not None and failure.text is not None
    assert len(failure.text) == junit.TAIL_BYTES and failure.text.endswith("\ufffd the end")


def test_a_site_that_cannot_be_read_still_gives_a_report(session: Session, tmp_path: Path) -> None:
    job = _job(session, "gone", "CANCELLED", site="nosuchsite", started_at=None)
    junit.write_junit(session(), [job], tmp_path / "j.xml")
    suite, cases = _cases(tmp_path / "j.xml")
    failure = cases["gone"].find("failure")
    assert failure is not None and (failure.text or "").startswith("(stderr not available: ")
    assert cases["gone"].get("classname") == "aifactory.nosuchsite" and suite.get("time") == "0.0"


def test_seconds_between_timestamps() -> None:
    assert junit._seconds(T0, "2026-11-30T11:00:00+00:00") == 3600
    assert junit._seconds("2026-11-30T10:00:00", "2026-11-30T10:00:05+00:00") == 5  # naive and aware
    assert junit._seconds("2026-11-30T10:00:05", "2026-11-30T10:00:00") == 0  # never negative
    assert junit._seconds(None, T0) == 0 and junit._seconds(T0, "Unknown") == 0


def test_sweep_cases_are_named_by_their_values(session: Session, tmp_path: Path) -> None:
    tasks = [Task(i, "COMPLETED" if i != 2 else "FAILED", exit_code=0 if i != 2 else 1) for i in range(4)]
    spec = json.dumps({"name": "bench", "run": "x", "matrix": {"LR": ["0.1", "0.01"], "BS": ["8", "16"]}})
    job = _job(session, "bench", "FAILED", array_size=4, tasks=tasks, spec_json=spec)
    out = tmp_path / "junit.xml"
    junit.write_junit(session(), [job], out)
    _, cases = _cases(out)
    assert list(cases) == [
        "bench[0] LR=0.1 BS=8", "bench[1] LR=0.1 BS=16", "bench[2] LR=0.01 BS=8", "bench[3] LR=0.01 BS=16",
    ]  # fmt: skip
    assert cases["bench[2] LR=0.01 BS=8"].find("failure") is not None
