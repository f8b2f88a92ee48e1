"""Following jobs through the service on a fake site: status, wait, cancel, logs, fetch, sync, and a
job whose site profile was removed."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import SITE, Session, fake_site, spec

from aifactory_cli.errors import EXIT_NOT_FOUND, NotFound, WaitTimeout
from aifactory_cli.jobs.store import Job
from aifactory_cli.service.session import exit_code_for


@pytest.fixture
def session(aif_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    return fake_site(tmp_path, monkeypatch)


def submitted(session: Session, tmp_path: Path, name: str = "hello", body: str = "run: echo hi\n") -> Job:
    with session() as svc:
        return svc.submit(svc.prepare(spec(tmp_path, name, body), SITE))


def test_wait_follows_the_states_slurm_reports_until_the_end(session: Session, tmp_path: Path) -> None:
    ok, bad = submitted(session, tmp_path, "ok"), submitted(session, tmp_path, "bad")
    slurm = session.fake.slurm
    with session() as svc:
        with pytest.raises(WaitTimeout, match="2 job"):
            svc.wait([ok.id, bad.id], timeout=0)  # asks the site once
        slurm.start(ok.slurm_job_id or "")
        slurm.finish(ok.slurm_job_id or "")
        slurm.finish(bad.slurm_job_id or "", code=3)
        seen: list[tuple[str, str]] = []
        jobs = svc.wait([ok.id, bad.id], on_change=lambda j: seen.append((j.id, j.state)), min_interval=0)
    assert [(j.state, j.exit_code) for j in jobs] == [("COMPLETED", 0), ("FAILED", 3)]
    assert sorted(seen) == sorted([(ok.id, "COMPLETED"), (bad.id, "FAILED")]) and exit_code_for(jobs) == 1
    # one squeue + sacct round trip per refresh for all the site's jobs
    assert all(len(c) == 1 for c in [[a for a in call if a.startswith("--jobs=")] for call in slurm.calls("sacct")])


def test_a_job_slurm_forgot_is_unknown_unless_its_exit_code_file_says(session: Session, tmp_path: Path) -> None:
    done, lost = submitted(session, tmp_path, "done"), submitted(session, tmp_path, "lost")
    slurm = session.fake.slurm
    slurm.finish(done.slurm_job_id or "", code=0)
    for job in (done, lost):
        slurm.forget(job.slurm_job_id or "", acct=True)  # neither squeue nor sacct knows them now
    with session() as svc:
        got = {j.name: (j.state, j.reason) for j in svc.status([done.id, lost.id])}
    assert got == {
        "done": ("COMPLETED", "from the job's exit_code file"),
        "lost": ("UNKNOWN", "not known to sacct or squeue"),  # never "completed" on a guess
    }


def test_cancel_then_logs_and_fetch(session: Session, tmp_path: Path) -> None:
    job = submitted(session, tmp_path, "out", 'run: echo hi\ndownload: ["stdout.log"]\n')
    with session() as svc:
        svc.cancel([job.id])
        assert session.fake.slurm.calls("scancel") == [[job.slurm_job_id]]
        (after,) = svc.status([job.id])
        assert after.state == "CANCELLED"
    workdir = Path(job.workdir or "")
    (workdir / "stdout.log").write_text("hello from the job\n")
    with session() as svc:
        assert svc.logs(job.id)[1] == b"hello from the job\n"
        done = svc.fetch(job.id, tmp_path / "got")
        files, target = done.files, done.target  # the spec's download: patterns
    assert files == ["stdout.log"] and (target / "stdout.log").read_text() == "hello from the job\n"


def test_wait_on_a_job_whose_site_profile_was_removed_says_so(session: Session, tmp_path: Path) -> None:
    job = submitted(session, tmp_path)
    (tmp_path / "profiles" / f"{SITE}.yaml").unlink()
    polls = len(session.fake.slurm.calls("squeue"))
    with session() as svc, pytest.raises(NotFound) as info:
        svc.wait([job.id], timeout=60)
    assert info.value.exit_code == EXIT_NOT_FOUND
    assert f"cannot wait for {job.id} ({SITE} job {job.slurm_job_id}, last known PENDING)" in info.value.message
    assert "profile is gone" in info.value.message and "restore the site's profile" in (info.value.hint or "")
    assert len(session.fake.slurm.calls("squeue")) == polls  # nothing was asked of a site it cannot reach
    with session() as svc:  # status keeps the last known state, with a warning
        assert [j.state for j in svc.status([job.id])] == ["PENDING"]
    assert any(f"site '{SITE}' has no profile any more" in n for n in session.notes)


def test_sync_rebuilds_the_store_from_the_site_alone(session: Session, tmp_path: Path, aif_home: Path) -> None:
    from aifactory_cli.service.sync import sync_site

    first, second = submitted(session, tmp_path, "one"), submitted(session, tmp_path, "two")
    session.fake.slurm.finish(first.slurm_job_id or "", code=0)
    for db in aif_home.rglob("jobs.sqlite3*"):
        db.unlink()  # a lost laptop
    with session() as svc:
        assert svc.store.query() == []
        added, jobs = sync_site(svc, SITE)
    got = {j.id: (j.name, j.slurm_job_id, j.state) for j in jobs}
    assert got == {
        first.id: ("one", first.slurm_job_id, "COMPLETED"),
        second.id: ("two", second.slurm_job_id, "PENDING"),
    }
    assert {j.id for j in added} == {first.id, second.id}
    with session() as svc:  # a second sync adds nothing
        assert sync_site(svc, SITE)[0] == []


def test_sync_skips_a_job_dir_with_damaged_metadata(session: Session, tmp_path: Path, aif_home: Path) -> None:
    import json

    from aifactory_cli.jobs import jobdir
    from aifactory_cli.service.sync import sync_site

    good, bad = submitted(session, tmp_path, "good"), submitted(session, tmp_path, "bad")
    meta_path = session.fake.home / (bad.workdir or "") / jobdir.META
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "array_size": "many"}))  # damaged on the site
    for db in aif_home.rglob("jobs.sqlite3*"):
        db.unlink()
    with session() as svc:
        added, _ = sync_site(svc, SITE)  # used to end in an internal error (exit 70)
    assert [j.id for j in added] == [good.id]
    assert any("cannot read its aifactory.json" in n and "skipped" in n for n in session.notes), session.notes


def test_cli_wait_on_a_job_whose_site_profile_was_removed(cli, aif_home: Path, tmp_path: Path) -> None:
    """`aifactory wait` used to poll once, then fail with "unknown site 'gone'" after a warning that
    the job keeps its last known state; now it says at once why it cannot wait (exit 4, the
    contract's "site not found"), as `cancel` does."""
    profiles = aif_home / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "gone.yaml").write_text("extends: local\n")
    job_id = cli("submit", str(spec(tmp_path, "sleepy", "run: sleep 60\n")), "--site", "gone").stdout.strip()
    (profiles / "gone.yaml").unlink()
    r = cli("wait", job_id, "--timeout", "30")
    assert r.code == 4 and "Traceback" not in r.stderr
    assert f"cannot wait for {job_id} (gone job" in r.stderr and "the site's profile is gone" in r.stderr
    assert "unknown site" not in r.stderr
    (profiles / "gone.yaml").write_text("extends: local\n")
    assert cli("cancel", job_id).code == 0


def test_a_deleted_job_dir_is_not_found_for_logs_and_fetch(session: Session, tmp_path: Path) -> None:
    import shutil

    job = submitted(session, tmp_path, "gone", 'run: echo hi\ndownload: ["stdout.log"]\n')
    with session() as svc:
        assert svc.logs(job.id)[1] == b""  # no output yet, and the dir is there: empty, no error
    shutil.rmtree(job.workdir or "")
    with session() as svc:
        for call in (lambda: svc.logs(job.id), lambda: svc.fetch(job.id, tmp_path / "got")):
            with pytest.raises(NotFound, match="no longer exists on") as exc:
                call()
            assert exc.value.exit_code == EXIT_NOT_FOUND
    assert not (tmp_path / "got").exists()
