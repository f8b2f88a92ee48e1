"""submit and settle through the service, on a fake site (tests/unit/fakes.py): the real command
text runs in bash over a temp dir, against a fake Slurm."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import SITE, Session, fake_site, spec

from aifactory_cli.errors import BadInput, RemoteError
from aifactory_cli.service.session import Service


@pytest.fixture
def session(aif_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    return fake_site(tmp_path, monkeypatch)


def submit(session: Session, path: Path) -> tuple[Service, object]:
    svc = session()
    return svc, svc.submit(svc.prepare(path, SITE))


def test_submit_stages_the_job_dir_and_queues_it_in_one_round_trip(session: Session, tmp_path: Path) -> None:
    svc, _ = submit(session, spec(tmp_path))
    (job,) = svc.store.query()
    assert job.state == "PENDING" and job.slurm_job_id == "1000"
    jobdir = session.fake.home / "aifactory" / f"hello-{job.id}"
    assert job.workdir == str(jobdir.resolve())  # `pwd -P` on the site
    assert {p.name for p in jobdir.iterdir()} >= {"job.sh", "aifactory.json", "slurm_job_id"}
    assert (jobdir / "slurm_job_id").read_text().strip() == "1000"
    assert session.fake.slurm.jobs()["1000"]["comment"] == f"aifactory:{job.token}"
    assert len(session.fake.commands) == 1
    svc.close()
    assert session.fake.closed


def test_a_refused_submission_leaves_nothing(session: Session, tmp_path: Path) -> None:
    for fault, error in (("rejected", BadInput), ("controller_down", RemoteError)):
        session.fake.slurm.set(sbatch_fault=fault)
        svc = session()
        with pytest.raises(error) as info:
            svc.submit(svc.prepare(spec(tmp_path), SITE))
        if isinstance(info.value, RemoteError):
            assert info.value.queued == "no" and "nothing was queued" in str(info.value)
        else:  # refused: its job dir is gone too, so `sync` cannot bring it back
            jobs_root = session.fake.home / "aifactory"
            assert not [d for d in jobs_root.iterdir() if d.name.startswith("hello-")], list(jobs_root.iterdir())
        assert svc.store.query() == []
        svc.close()
    session.fake.refuse_login = True  # nothing was sent at all
    svc = session()
    with pytest.raises(RemoteError, match="Connection refused"):
        svc.submit(svc.prepare(spec(tmp_path), SITE))
    assert svc.store.query() == [] and session.fake.slurm.jobs() == {}


def test_sbatch_that_queued_but_reported_a_failure_is_settled_and_never_sent_twice(
    session: Session, tmp_path: Path
) -> None:
    session.fake.slurm.set(sbatch_fault="timeout")
    path = spec(tmp_path)
    svc = session()
    with pytest.raises(RemoteError) as info:
        svc.submit(svc.prepare(path, SITE))
    assert info.value.queued == "maybe" and "never submitted twice" in str(info.value)
    (job,) = svc.store.query()
    assert job.state == "UNKNOWN" and job.slurm_job_id is None and job.extra["in_doubt"]
    session.fake.slurm.set(sbatch_fault=None)
    # the same spec again: looked up first (the token in squeue), not submitted again
    again = session()
    earlier = again.submit(again.prepare(path, SITE))
    assert earlier.id == job.id and earlier.slurm_job_id == "1000" and earlier.state == "PENDING"
    assert any("not submitting again" in n for n in session.notes)
    assert len(session.fake.slurm.calls("sbatch")) == 1 and list(session.fake.slurm.jobs()) == ["1000"]


def test_connection_lost_after_sbatch_then_status_settles_it(session: Session, tmp_path: Path) -> None:
    session.fake.drop_after = lambda line: "sbatch" in line
    svc = session()
    with pytest.raises(RemoteError, match="was lost"):
        svc.submit(svc.prepare(spec(tmp_path), SITE))
    (job,) = session().store.query()
    assert job.state == "UNKNOWN"
    (settled,) = session().status([job.id])
    assert (settled.state, settled.slurm_job_id) == ("PENDING", "1000")
    assert "in_doubt" not in settled.extra and settled.reason == "Priority"  # then polled like any job
    assert any(f"{job.id}: the interrupted submission did reach {SITE} as job 1000" in n for n in session.notes)


def test_interrupted_before_sbatch_is_settled_as_never_submitted(session: Session, tmp_path: Path) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C while the job dir is being staged

    svc = session()
    svc.backend(SITE).submit = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        svc.submit(svc.prepare(spec(tmp_path), SITE))
    (job,) = session().store.query()
    assert (job.state, job.reason) == ("UNKNOWN", "submission interrupted")
    (settled,) = session().status([job.id])
    assert settled.state == "FAILED" and "never submitted" in (settled.reason or "")
    assert session.fake.slurm.jobs() == {}


def test_when_the_site_cannot_tell_the_job_stays_in_doubt_and_is_not_sent_again(
    session: Session, tmp_path: Path
) -> None:
    session.fake.slurm.set(sbatch_fault="timeout")
    path = spec(tmp_path)
    svc = session()
    with pytest.raises(RemoteError):
        svc.submit(svc.prepare(path, SITE))
    session.fake.slurm.forget("1000")  # the job left squeue...
    session.fake.slurm.set(sbatch_fault=None, squeue_down=True)  # ...and squeue cannot say anything now
    (job,) = session().status([])
    assert job.state == "UNKNOWN" and job.extra["in_doubt"]
    again = session()
    with pytest.raises(RemoteError, match="cannot tell whether the interrupted submission"):
        again.submit(again.prepare(path, SITE))
    assert len(session.fake.slurm.calls("sbatch")) == 1
    session.fake.slurm.set(squeue_down=False)
    session.fake.slurm.finish("1000")  # sacct knows its job dir once it ended
    (job,) = session().status([])
    assert (job.state, job.slurm_job_id) == ("COMPLETED", "1000")


def test_a_site_that_cannot_be_reached_does_not_fail_status_of_other_jobs(session: Session, tmp_path: Path) -> None:
    session.fake.slurm.set(sbatch_fault="timeout")
    svc = session()
    with pytest.raises(RemoteError):
        svc.submit(svc.prepare(spec(tmp_path), SITE))  # in doubt on SITE
    local = session()
    local_job = local.submit(local.prepare(spec(tmp_path), "local"))
    session.fake.refuse_login = True  # SITE is down now
    later = session()
    (job,) = later.status([local_job.id])  # used to raise: settling SITE's job came first
    assert job.id == local_job.id
    assert any("cannot look up interrupted submissions now" in n for n in session.notes), session.notes


def test_an_edited_spec_after_an_interrupted_submission_is_a_new_job(session: Session, tmp_path: Path) -> None:
    session.fake.slurm.set(sbatch_fault="timeout")
    path = spec(tmp_path)
    svc = session()
    with pytest.raises(RemoteError):
        svc.submit(svc.prepare(path, SITE))  # queued as 1000, though sbatch said it failed
    session.fake.slurm.set(sbatch_fault=None)
    path.write_text(path.read_text().replace("run:", "env: {LR: '0.1'}\nrun:", 1))  # the user edits it
    again = session()
    new = again.submit(again.prepare(path, SITE))
    # the interrupted one is settled (queued) and the edited spec is submitted, not swallowed
    assert new.slurm_job_id == "1001" and len(session.fake.slurm.calls("sbatch")) == 2
    assert {j.slurm_job_id for j in again.store.query()} == {"1000", "1001"}
