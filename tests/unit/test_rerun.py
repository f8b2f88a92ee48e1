"""`aifactory rerun JOB [--failed|--task ...] [--dry-run]`, in-process through the error boundary, on
the fake site: the new job's spec, site, account and partition, what it records it reruns, and the
refusals (exit 2, nothing submitted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import SITE, Session, fake_site, spec

from aifactory_cli.jobs.model import Job, Task

SWEEP = 'matrix: {LR: ["0.1", "0.2", "0.3"]}\nrun: python train.py --lr "$LR"\n'


@pytest.fixture
def session(aif_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    s = fake_site(tmp_path, monkeypatch)
    from aifactory_cli.cli import output

    monkeypatch.setattr(output, "service", lambda **kw: s())  # the CLI reaches the fake site
    return s


def aif(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from aifactory_cli.cli import app, hoist_debug
    from aifactory_cli.cli.boundary import run_app

    capsys.readouterr()
    code = run_app(app, hoist_debug(list(args)))
    out = capsys.readouterr()
    return code, out.out, out.err


# not what the environment (AIFACTORY_ACCOUNT) or the site's default would choose: rerun keeps them
ACCOUNT, PARTITION = "project_465000999", "debug"


def submitted(session: Session, tmp_path: Path, name: str = "sw", body: str = SWEEP, **state: object) -> Job:
    from aifactory_cli.sites.resolve import Overrides

    with session() as svc:
        job = svc.submit(svc.prepare(spec(tmp_path, name, body), SITE, Overrides(account=ACCOUNT, partition=PARTITION)))
        if state:
            job = svc.store.update(job, **state)
    return job


def failed_sweep(session: Session, tmp_path: Path) -> Job:
    tasks = [Task(0, "COMPLETED", exit_code=0), Task(1, "COMPLETED", exit_code=0), Task(2, "FAILED", exit_code=3)]
    return submitted(session, tmp_path, state="FAILED", exit_code=3, tasks=tasks)


def jobs(session: Session) -> list[Job]:
    with session() as svc:
        return svc.store.query()


def new_job(session: Session, original: Job) -> Job:
    (new,) = [j for j in jobs(session) if j.id != original.id]
    return new


def sbatch_calls(session: Session) -> int:
    return len([c for c in session.fake.slurm.calls("sbatch") if "--test-only" not in c])


def test_rerun_failed_submits_only_the_failed_element(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orig = failed_sweep(session, tmp_path)
    code, out, err = aif(capsys, "rerun", orig.id, "--failed")
    assert code == 0, err
    new = new_job(session, orig)
    assert out.strip() == new.id
    assert f"rerun of {orig.id}, element 2 (LR=0.3)" in err
    assert json.loads(new.spec_json or "")["matrix"] == [{"LR": "0.3"}]
    assert new.array_size == 1 and new.extra["rerun_of"] == {"job": orig.id, "elements": [2]}
    assert (new.site, new.name) == (orig.site, orig.name)
    for key in ("account", "partition", "qos"):
        assert new.extra.get(key) == orig.extra.get(key), key
    assert (new.extra["account"], new.extra["partition"]) == (ACCOUNT, PARTITION)
    assert f"--account={ACCOUNT}" in (new.script or "") and f"--partition={PARTITION}" in (new.script or "")
    assert sbatch_calls(session) == 2
    script = new.script or ""
    assert "--array=0-0" in script and "export LR=0.3;" in script and "LR=0.1" not in script


def test_rerun_task_by_values(session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    orig = failed_sweep(session, tmp_path)
    code, _, err = aif(capsys, "rerun", orig.id, "--task", "LR=0.1")
    assert code == 0, err
    new = new_job(session, orig)
    assert json.loads(new.spec_json or "")["matrix"] == [{"LR": "0.1"}]
    assert new.extra["rerun_of"] == {"job": orig.id, "elements": [0]}


def test_rerun_task_of_a_running_sweep_is_allowed(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orig = submitted(session, tmp_path)  # PENDING
    code, _, err = aif(capsys, "rerun", orig.id, "--task", "0-1")
    assert code == 0, err
    assert json.loads(new_job(session, orig).spec_json or "")["matrix"] == [{"LR": "0.1"}, {"LR": "0.2"}]


def test_failed_and_task_together_are_refused(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orig = failed_sweep(session, tmp_path)
    code, out, err = aif(capsys, "rerun", orig.id, "--failed", "--task", "2")
    assert code == 2 and out == "" and "--failed and --task" in err and "Traceback" not in err
    assert len(jobs(session)) == 1 and sbatch_calls(session) == 1


def test_failed_on_a_job_still_running_is_refused(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orig = submitted(session, tmp_path)
    code, out, err = aif(capsys, "rerun", orig.id, "--failed")
    assert code == 2 and out == "" and f"is still {orig.state}" in err and f"aifactory wait {orig.id}" in err
    assert len(jobs(session)) == 1 and sbatch_calls(session) == 1


def test_failed_on_a_completed_plain_job_has_nothing_to_rerun(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orig = submitted(session, tmp_path, "plain", "run: echo hi\n", state="COMPLETED", exit_code=0)
    code, _, err = aif(capsys, "rerun", orig.id, "--failed")
    assert code == 2 and "ended COMPLETED: nothing failed to rerun" in err
    assert len(jobs(session)) == 1 and sbatch_calls(session) == 1


def test_failed_on_a_sweep_where_nothing_failed(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = [Task(i, "COMPLETED", exit_code=0) for i in range(3)]
    orig = submitted(session, tmp_path, state="COMPLETED", exit_code=0, tasks=tasks)
    code, _, err = aif(capsys, "rerun", orig.id, "--failed")
    assert code == 2 and "no element of job" in err and "nothing to rerun" in err
    assert sbatch_calls(session) == 1


def test_a_failed_plain_job_is_resubmitted_whole(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orig = submitted(session, tmp_path, "plain", "run: exit 3\n", state="FAILED", exit_code=3)
    code, _, err = aif(capsys, "rerun", orig.id, "--failed")
    assert code == 0, err
    new = new_job(session, orig)
    assert json.loads(new.spec_json or "") == json.loads(orig.spec_json or "")
    assert new.array_size == 0 and new.extra["rerun_of"] == {"job": orig.id, "elements": None}
    assert f"rerun of {orig.id}, the job" in err


def test_dry_run_prints_the_script_and_submits_nothing(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orig = failed_sweep(session, tmp_path)
    code, out, err = aif(capsys, "rerun", orig.id, "--failed", "--dry-run")
    assert code == 0, err
    assert out.startswith("#!") and "--array=0-0" in out and "export LR=0.3;" in out and "LR=0.1" not in out
    assert f"would rerun {orig.id} (sw) on {SITE}: element 2 (LR=0.3)" in err
    assert len(jobs(session)) == 1 and sbatch_calls(session) == 1
    code, out, _ = aif(capsys, "rerun", orig.id, "--failed", "--dry-run", "--json")
    data = json.loads(out[out.index("{") :])
    assert code == 0 and data["dry_run"] is True and data["elements"] == [2] and data["rerun_of"] == orig.id
    assert sbatch_calls(session) == 1


def test_a_task_the_sweep_lacks_lists_its_elements(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orig = failed_sweep(session, tmp_path)
    code, _, err = aif(capsys, "rerun", orig.id, "--task", "LR=9")
    assert code == 2 and "has no element 'LR=9'" in err and "element 1 (LR=0.2)" in err
    assert sbatch_calls(session) == 1
