"""`wait` learns a job's end from its exit-code files (one small command per site, every WATCH_TICK),
asks Slurm once to confirm it, and otherwise asks Slurm no more often than the site's poll_interval
(tests/unit/fakes.py: FakeTransport runs the real command text over a fake Slurm)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fakes import SITE, Session, fake_site, spec

from aifactory_cli.errors import WaitTimeout
from aifactory_cli.jobs.store import Job
from aifactory_cli.service import track

WATCH = "_aif_w"  # in every watch command (jobs.jobdir.watch_command)


@pytest.fixture
def session(aif_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    s = fake_site(tmp_path, monkeypatch)
    profile = tmp_path / "profiles" / f"{SITE}.yaml"
    profile.write_text(profile.read_text().replace("poll_interval: 0", "poll_interval: 30"))
    monkeypatch.setattr(track, "WATCH_TICK", 0.05)
    monkeypatch.setattr(track, "CONFIRM_GRACE", 0.05)
    return s


def submitted(session: Session, tmp_path: Path, name: str = "hello", body: str = "run: echo hi\n") -> Job:
    with session() as svc:
        return svc.submit(svc.prepare(spec(tmp_path, name, body), SITE))


def status_queries(session: Session) -> int:
    return len(session.fake.slurm.calls("squeue"))


def watch_commands(session: Session) -> list[str]:
    return [c for c in session.fake.commands if WATCH in c]


class EndOnceRunning:
    """An on_change callback: once `wait` has seen the job RUNNING (its first poll is done), the job
    ends `after` seconds later in the background; `states` are the changes `wait` reported."""

    def __init__(self, session: Session, job: Job, code: int = 0, after: float = 0.2) -> None:
        self.session, self.job, self.code, self.after = session, job, code, after
        self.states: list[str] = []
        self.thread: threading.Thread | None = None
        self.ended = 0.0

    def __call__(self, job: Job) -> None:
        self.states.append(job.state)
        if job.state == "RUNNING" and self.thread is None:
            self.thread = threading.Thread(target=self.end, daemon=True)
            self.thread.start()

    def end(self) -> None:
        time.sleep(self.after)
        self.session.fake.slurm.finish(self.job.slurm_job_id or "", code=self.code)
        self.ended = time.monotonic()

    def seconds_since_end(self) -> float:
        assert self.thread is not None
        self.thread.join()
        return time.monotonic() - self.ended


@pytest.mark.parametrize(("code", "state"), [(0, "COMPLETED"), (3, "FAILED")])
def test_the_end_is_learned_from_the_job_dir_and_the_state_is_slurms(
    session: Session, tmp_path: Path, code: int, state: str
) -> None:
    job = submitted(session, tmp_path)
    slurm = session.fake.slurm
    slurm.start(job.slurm_job_id or "")
    before = status_queries(session)
    ender = EndOnceRunning(session, job, code)
    with session() as svc:
        (done,) = svc.wait([job.id], timeout=25, on_change=ender)
    took = ender.seconds_since_end()
    assert (done.state, done.exit_code, done.slurm_state) == (state, code, state)
    assert ender.states == ["RUNNING", state]
    assert took < 5, took  # poll_interval is 30 s: without the watch, the end came after 30 s
    # one poll at the start, then ONE confirming query once the exit_code file was there
    assert status_queries(session) - before == 2
    assert len(watch_commands(session)) >= 2


def test_an_exit_code_file_is_not_an_end_while_slurm_says_running(session: Session, tmp_path: Path) -> None:
    job = submitted(session, tmp_path)
    slurm = session.fake.slurm
    slurm.start(job.slurm_job_id or "")
    Path(job.workdir or "", "exit_code").write_text("0\n")  # the script's trap ran; Slurm has not caught up
    before = status_queries(session)
    seen: list[str] = []
    with session() as svc:
        with pytest.raises(WaitTimeout, match="RUNNING"):
            svc.wait([job.id], timeout=1.5, on_change=lambda j: seen.append(j.state))
        assert svc.store.find(job.id).state == "RUNNING"
    assert "COMPLETED" not in seen
    # the poll at the start, the one confirming query, the poll at the timeout: a job Slurm was asked
    # about out of turn is not looked at again (2 looks: first sight, then the one that confirmed)
    assert status_queries(session) - before == 3
    assert len(watch_commands(session)) == 2
    slurm.finish(job.slurm_job_id or "")  # now Slurm agrees
    with session() as svc:
        (done,) = svc.wait([job.id], timeout=25)
    assert (done.state, done.exit_code) == ("COMPLETED", 0)


def test_one_watch_command_per_site_for_all_live_jobs(session: Session, tmp_path: Path) -> None:
    jobs = [submitted(session, tmp_path, f"j{i}") for i in range(3)]
    slurm = session.fake.slurm
    with session() as svc, pytest.raises(WaitTimeout):
        svc.wait([j.id for j in jobs], timeout=1.5)
    looks = watch_commands(session)
    assert looks
    for command in looks:  # every look names every job dir, in one command
        assert all(str(j.workdir) in command for j in jobs)
    for j in jobs:
        slurm.finish(j.slurm_job_id or "")
    with session() as svc:
        done = svc.wait([j.id for j in jobs], timeout=25)
    assert [j.state for j in done] == ["COMPLETED"] * 3


def test_ended_needs_every_array_elements_file_and_skips_unreadable_dirs(session: Session, tmp_path: Path) -> None:
    plain = submitted(session, tmp_path, "plain")
    array = submitted(session, tmp_path, "arr", "matrix: {I: [a, b]}\nrun: echo $I\n")
    gone = submitted(session, tmp_path, "gone")
    assert array.array_size == 2
    arr_dir, plain_dir = Path(array.workdir or ""), Path(plain.workdir or "")
    with session() as svc:
        backend = svc.backend(SITE)
        assert backend.ended([plain, array, gone]) == {plain.id: False, array.id: False, gone.id: False}
        (arr_dir / "exit_code.0").write_text("0\n")
        (arr_dir / "exit_code.1.tmp").write_text("0\n")  # half written: not yet
        (plain_dir / "exit_code.tmp").write_text("0\n")
        assert backend.ended([plain, array]) == {plain.id: False, array.id: False}
        (arr_dir / "exit_code.1").write_text("1\n")
        (plain_dir / "exit_code").write_text("0\n")
        for path in Path(gone.workdir or "").iterdir():
            path.unlink()
        Path(gone.workdir or "").rmdir()
        # the removed dir is left to Slurm's polls
        assert backend.ended([plain, array, gone]) == {plain.id: True, array.id: True}
        assert sum(WATCH in c for c in session.fake.commands) == 3  # one command per call


def test_a_lost_connection_while_watching_leaves_it_to_the_next_poll(session: Session, tmp_path: Path) -> None:
    profile = tmp_path / "profiles" / f"{SITE}.yaml"
    profile.write_text(profile.read_text().replace("poll_interval: 30", "poll_interval: 1.5"))
    job = submitted(session, tmp_path)
    slurm = session.fake.slurm
    slurm.start(job.slurm_job_id or "")
    before = status_queries(session)
    session.fake.drop_after = lambda line: WATCH in line  # the first look loses the connection
    ender = EndOnceRunning(session, job)
    with session() as svc:
        (done,) = svc.wait([job.id], timeout=25, on_change=ender)
    took = ender.seconds_since_end()
    assert done.state == "COMPLETED"
    assert session.fake.drop_after is None  # the drop happened
    assert len(watch_commands(session)) == 1  # no more looks until the next poll ...
    assert 1.0 < took < 5, took  # ... which came at poll_interval (1.5 s after the first) and found the end
    assert status_queries(session) - before == 2
    assert not any("lost contact" in n for n in session.notes)


def test_the_local_site_ends_promptly_between_polls(
    aif_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local runner's status file is watched as well (`LocalBackend.ended`): a poll backoff of
    5 s no longer delays the end."""
    from aifactory_cli.service.session import Service

    monkeypatch.setattr(track, "WATCH_TICK", 0.1)
    with Service() as svc:
        job = svc.submit(svc.prepare(spec(tmp_path, "loc", "run: sleep 1.5; exit 4\n"), "local"))
        (done,) = svc.wait(jobs=[job], timeout=30, min_interval=5)
        returned = time.time()
    assert (done.state, done.exit_code) == ("FAILED", 4)
    ended = Path(job.workdir or "", "exit_code").stat().st_mtime
    assert returned - ended < 1.5, returned - ended
