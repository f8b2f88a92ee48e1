"""A checkpointed run as one job (issue 18, step 3): the segments the batch script records, read
back by status (its current Slurm job: a chain's newest), `--json` key `segments`, cancel of the whole
run, and the pure reading of segments.tsv."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fakes import SITE, Session, fake_site, spec

from aifactory_cli import states
from aifactory_cli.jobs import segments
from aifactory_cli.jobs.store import Job

BODY = "run: exec python3 train.py\ncheckpoint: {segment: 2m, grace: 20s}\n"


@pytest.fixture
def session(aif_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    return fake_site(tmp_path, monkeypatch)


def _submit(session: Session, tmp_path: Path) -> Job:
    path = spec(tmp_path, "long", BODY).read_text().replace("time: 5m", "time: 5m")
    (tmp_path / "long.yaml").write_text(path)
    with session() as svc:
        return svc.submit(svc.prepare(tmp_path / "long.yaml", SITE))


def _dir(session: Session, job: Job) -> Path:
    return session.fake._path(job.workdir or "")


def _line(*fields: object) -> str:
    return "\t".join(str(f) for f in fields) + "\n"


def test_parse_and_view_are_pure() -> None:
    text = (
        _line("start", 0, 0, 11, 1000)
        + _line("end", 0, 0, 11, 1100, "next", 0)
        + _line("start", 1, 0, 12, 1102)  # died: the node failed
        + _line("start", 1, 1, 12, 1300)
        + _line("end", 1, 1, 12, 1350, "failed", 7)
    )
    segs = segments.parse(text)
    assert [(s.segment, s.restarts, s.slurm_job_id, s.state, s.outcome, s.exit_code) for s in segs] == [
        (0, 0, "11", states.COMPLETED, "next", 0),
        (1, 0, "12", states.NODE_FAIL, "restarted", None),
        (1, 1, "12", states.FAILED, "failed", 7),
    ]
    assert segs[0].started_at == "1970-01-01T00:16:40+00:00"
    run = segments.view(segs)
    assert (run.state, run.exit_code) == (states.FAILED, 7) and "segment 1" in (run.reason or "")
    going = segments.parse(text.rsplit("start", 2)[0])  # up to the first `next`
    assert segments.view(going).between and segments.combine(going, "11", states.COMPLETED, None) == states.PENDING
    running = segments.parse(_line("start", 0, 0, 11, 1000))
    assert segments.combine(running, "11", states.RUNNING, None) == states.RUNNING
    assert segments.combine(running, "11", states.NODE_FAIL, None) == states.NODE_FAIL  # retries 0
    assert running[0].state == states.NODE_FAIL


def test_status_follows_the_chain_and_shows_one_job_with_its_segments(session: Session, tmp_path: Path) -> None:
    job = _submit(session, tmp_path)
    first = job.slurm_job_id or ""
    slurm, workdir = session.fake.slurm, _dir(session, job)
    assert job.extra["segmented"] == "requeue" and job.to_json()["segments"] == []
    now = int(time.time())
    slurm.start(first)
    (workdir / "segments.tsv").write_text(_line("start", 0, 0, first, now - 100))
    with session() as svc:
        [seen] = svc.status([job.id])
    assert seen.state == states.RUNNING and [s["slurm_job_id"] for s in seen.to_json()["segments"]] == [first]
    # segment 0 hands over to a dependent job (what the script does where requeue is not allowed)
    with (workdir / "segments.tsv").open("a") as log:
        log.write(_line("end", 0, 0, first, now - 50, "next", 0))
    slurm.finish(first)
    (workdir / "exit_code").unlink()  # the script writes none when a segment follows
    with session() as svc:
        [seen] = svc.status([job.id])
    assert seen.state == states.PENDING  # between two segments, never COMPLETED
    second = session.fake.run(f"cd {workdir} && sbatch --parsable job.sh").stdout.strip()
    (workdir / "slurm_job_id").write_text(second + "\n")
    slurm.start(second)
    with (workdir / "segments.tsv").open("a") as log:
        log.write(_line("start", 1, 0, second, now - 49))
    with session() as svc:
        [seen] = svc.status([job.id])
    assert (seen.state, seen.slurm_job_id) == (states.RUNNING, second)
    with (workdir / "segments.tsv").open("a") as log:
        log.write(_line("end", 1, 0, second, now - 5, "done", 0))
    slurm.finish(second)
    with session() as svc:
        [seen] = svc.status([job.id])
        [listed] = [j for j in svc.store.query() if j.id == job.id]
    out = seen.to_json()
    assert (out["state"], out["exit_code"], out["slurm_job_id"]) == ("COMPLETED", 0, second)
    assert [(s["slurm_job_id"], s["state"], s["exit_code"]) for s in out["segments"]] == [
        (first, "COMPLETED", 0),
        (second, "COMPLETED", 0),
    ]
    assert listed.to_json()["segments"] == out["segments"]  # kept in the store


def test_cancel_stops_the_current_segment_and_any_next(session: Session, tmp_path: Path) -> None:
    job = _submit(session, tmp_path)
    first = job.slurm_job_id or ""
    slurm, workdir = session.fake.slurm, _dir(session, job)
    slurm.finish(first)
    (workdir / "exit_code").unlink()
    second = session.fake.run(f"cd {workdir} && sbatch --parsable job.sh").stdout.strip()
    (workdir / "slurm_job_id").write_text(second + "\n")
    now = int(time.time())
    (workdir / "segments.tsv").write_text(
        _line("start", 0, 0, first, now - 9) + _line("end", 0, 0, first, now - 5, "next", 0)
    )
    with session() as svc:
        svc.cancel([job.id])
    assert (workdir / "cancel-requested").exists()  # the script starts no segment after this
    assert [second] in [[a for a in c if a.isdigit() and a == second] for c in slurm.calls("scancel")]
    assert slurm.jobs()[second]["state"] == "CANCELLED"


def test_sync_rebuilds_the_run_with_its_segments(session: Session, tmp_path: Path, aif_home: Path) -> None:
    from aifactory_cli.service.sync import sync_site

    job = _submit(session, tmp_path)
    first = job.slurm_job_id or ""
    slurm, workdir = session.fake.slurm, _dir(session, job)
    slurm.finish(first)
    (workdir / "exit_code").unlink()
    second = session.fake.run(f"cd {workdir} && sbatch --parsable job.sh").stdout.strip()
    (workdir / "slurm_job_id").write_text(second + "\n")
    slurm.start(second)
    now = int(time.time())
    (workdir / "segments.tsv").write_text(
        _line("start", 0, 0, first, now - 9)
        + _line("end", 0, 0, first, now - 5, "next", 0)
        + _line("start", 1, 0, second, now - 4)
    )
    for db in aif_home.rglob("jobs.sqlite3*"):
        db.unlink()  # a lost laptop
    with session() as svc:
        added, jobs = sync_site(svc, SITE)
    [got] = [j for j in jobs if j.id == job.id]
    out = got.to_json()
    assert [j.id for j in added] == [job.id]
    assert (out["state"], out["slurm_job_id"]) == ("RUNNING", second)
    assert [(s["segment"], s["slurm_job_id"], s["state"]) for s in out["segments"]] == [
        (0, first, "COMPLETED"),
        (1, second, "RUNNING"),
    ]
