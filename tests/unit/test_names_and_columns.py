"""Names that keep working (a name means its only live job, else its newest, with a note) and
truthful status columns (a real start, an expected start apart, an exit code only once ended, no
stale reason, `cancel` recorded at once): the resolver, the parsers on recorded Slurm output, the
service on a fake site, the table's columns and shell completion."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from fakes import SITE, Session, fake_site, spec
from recorded import VERSIONS, Recording

from aifactory_cli.cli import completion, output
from aifactory_cli.errors import BadInput, NotFound
from aifactory_cli.jobs import refs
from aifactory_cli.jobs.model import Job, now_iso
from aifactory_cli.jobs.store import Store
from aifactory_cli.scheduler import slurm
from aifactory_cli.service import listing

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"


def _job(job_id: str, name: str, state: str, created: str = "2026-12-01T10:00:00+00:00", **kw: object) -> Job:
    return Job(id=job_id, token=job_id * 4, name=name, site="local", state=state, created_at=created,
               updated_at=created, **kw)  # type: ignore[arg-type]  # fmt: skip


def _at(minute: int) -> str:
    return f"2026-12-01T10:{minute:02d}:00+00:00"


# --- the rule (jobs/refs.py) and the store ---------------------------------------------------------------


def test_a_name_of_ended_jobs_means_the_newest_and_says_so() -> None:
    named = [_job("cccc0003", "train", "FAILED", _at(3)), _job("bbbb0002", "train", "COMPLETED", _at(2)),
             _job("aaaa0001", "train", "CANCELLED", _at(1))]  # fmt: skip
    choice = refs.choose("train", named, [])
    assert choice.job.id == "cccc0003"
    assert choice.note == "note: 'train' is job cccc0003 (newest of 3; others: bbbb0002 COMPLETED, aaaa0001 CANCELLED)"
    assert refs.choose("train", named[1:2], []).note is None  # one job of the name: nothing to say


def test_a_name_with_one_live_job_means_that_one_even_if_newer_ones_ended() -> None:
    named = [_job("cccc0003", "train", "COMPLETED", _at(3)), _job("bbbb0002", "train", "RUNNING", _at(2)),
             _job("aaaa0001", "train", "PREPARED", _at(1))]  # fmt: skip  # PREPARED: in doubt, not "live" here
    choice = refs.choose("train", named, [])
    assert choice.job.id == "bbbb0002" and "(the live one of 3;" in (choice.note or "")


def test_a_name_with_several_live_jobs_is_refused_with_the_list() -> None:
    named = [_job("cccc0003", "train", "PENDING", _at(3)), _job("bbbb0002", "train", "RUNNING", _at(2)),
             _job("aaaa0001", "train", "COMPLETED", _at(1))]  # fmt: skip
    with pytest.raises(BadInput) as info:
        refs.choose("train", named, [])
    assert info.value.exit_code == 2
    assert "'train' names 2 live jobs: cccc0003 (local, PENDING" in info.value.message
    assert "bbbb0002 (local, RUNNING" in info.value.message and "aaaa0001" not in info.value.message
    assert "aifactory list --name train" in (info.value.hint or "")


def test_prefixes_and_nothing() -> None:
    a, b = _job("abcd0001", "x", "COMPLETED"), _job("abce0002", "y", "COMPLETED")
    assert refs.choose("abcd", [], [a]).job is a
    with pytest.raises(BadInput, match="'abc' matches 2 jobs"):
        refs.choose("abc", [], [a, b])
    with pytest.raises(NotFound):
        refs.choose("zzz", [], [])


def test_store_find_newest_by_name_notes_once_and_an_exact_id_wins(aif_home: Path) -> None:
    notes: list[str] = []
    store = Store(notify=notes.append)
    same_second = now_iso()
    for job_id in ("11111111", "22222222", "33333333"):  # created in one second: insertion order decides
        store.add(_job(job_id, "train", "COMPLETED", same_second))
    store.add(_job("44444444", "33333333", "COMPLETED", same_second))  # a name that is another job's id
    assert store.find("train").id == "33333333"
    assert store.find("train").id == "33333333"
    assert notes == ["note: 'train' is job 33333333 (newest of 3; others: 22222222 COMPLETED, 11111111 COMPLETED)"]
    assert store.find("33333333").name == "train"  # the exact id, not the job named so
    assert store.find("4444").name == "33333333"  # id prefixes keep working
    store.close()


# --- the parsers, on output recorded from the test bed ------------------------------------------------------


def _sections(name: str) -> dict[str, dict[tuple[str, int | None], slurm.SlurmRow]]:
    """{snapshot: merged rows} of a recording by tests/data/record_pending_columns.py."""
    text = (DATA / name).read_text()
    out = {}
    for chunk in text.split("### ")[1:]:
        title, _, body = chunk.partition("\n")
        if title in ("live", "cancelled", "settled"):
            queue, qrc, acct, arc = slurm.split_status_output(body)
            assert qrc == 0 and arc == 0
            out[title] = slurm.merge_rows(slurm.parse_squeue(queue), slurm.parse_sacct(acct))
    return out


def _ids(name: str) -> dict[str, str]:
    first = (DATA / name).read_text().splitlines()[0]
    return dict(pair.split("=", 1) for pair in first.removeprefix("### ids ").split())


def _iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).isoformat()


@pytest.mark.parametrize("recording", sorted(p.name for p in DATA.glob("columns_*.txt")))
def test_pending_jobs_have_an_expected_start_not_a_start(recording: str) -> None:
    ids, snaps = _ids(recording), _sections(recording)
    live = snaps["live"]
    begin, held, running = (live[(ids[k], None)] for k in ("begin", "held", "running"))
    # squeue's %S of a job held back by --begin is Slurm's EXPECTED start, 5 minutes ahead
    assert (begin.state, begin.start, begin.reason) == ("PENDING", None, "BeginTime")
    submitted = int((DATA / recording).read_text().splitlines()[1].split()[-1])
    assert begin.expected_start is not None
    ahead = dt.datetime.fromisoformat(begin.expected_start) - dt.datetime.fromisoformat(_iso(submitted))
    assert 250 < ahead.total_seconds() < 320
    assert (held.state, held.start, held.expected_start, held.reason) == ("PENDING", None, None, "JobHeldUser")
    # sacct still says PENDING 0:0 for the running job (slurmdbd lags): no exit code for a live job
    assert (running.state, running.exit_code, running.reason, running.expected_start) == ("RUNNING", None, None, None)
    assert running.start is not None
    # sacct alone (once squeue has forgotten a job, or when squeue fails) says 0:0 for live jobs: the
    # running one (22.05 still calls it PENDING, with its start) and, from 24.11 on, the held job and the
    # one whose --begin is 5 minutes ahead: no exit code for any of them, no start for those that wait
    live_text = (DATA / recording).read_text().split("### live\n", 1)[1].split("### ", 1)[0]
    acct = slurm.latest_rows(slurm.parse_sacct(slurm.split_status_output(live_text)[2]))
    listed = [k for k in ("begin", "held", "running") if (ids[k], None) in acct]
    assert listed == (["begin", "held", "running"] if "24_11" in recording else ["running"])
    for k in listed:
        assert acct[(ids[k], None)].exit_code is None, (k, acct[(ids[k], None)])
        assert k == "running" or acct[(ids[k], None)].start is None, (k, acct[(ids[k], None)])
    for snap in ("cancelled", "settled"):  # squeue and sacct keep BeginTime / JobHeldUser: stale
        rows = snaps[snap]
        for k in ("begin", "held", "running"):
            row = rows[(ids[k], None)]
            assert (row.state, row.exit_code, row.reason, row.expected_start) == ("CANCELLED", None, None, None)
            assert row.end is not None
        assert rows[(ids["begin"], None)].start is None and rows[(ids["held"], None)].start is None
        assert rows[(ids["running"], None)].start == running.start


@pytest.mark.parametrize("version", VERSIONS)
def test_exit_codes_only_where_they_mean_something(version: str) -> None:
    rec = Recording(version)
    ids = rec.ids()
    final = rec.sacct("sacct_final.txt")
    codes = {k: final[(ids[k], None)].exit_code for k in ("ok", "fail3", "running", "held", "timeout", "dep")}
    # Slurm says 0:0 for the cancelled, timed-out and pending jobs: their programs never said 0
    assert codes == {"ok": 0, "fail3": 3, "running": None, "held": None, "timeout": None, "dep": None}
    after = rec.sacct("sacct_after_cancel.txt")
    # a held array cancelled while pending: sacct keeps JobHeldUser as its reason; stale
    assert {after[(ids["array_held"], i)].reason for i in range(4)} == {None}
    queue = slurm.latest_rows(slurm.parse_squeue(rec.text("squeue_live.txt")))
    assert queue[(ids["fail3"], None)].reason == "NonZeroExitCode"  # a failure's reason stays
    # a cancelled job whose program had already failed keeps its own code
    row = slurm.parse_sacct("5|5|CANCELLED by 1001|2:0|None|1|2|00:00:01|")[0]
    assert row.exit_code == 2
    # Slurm cancelled it because its dependency failed (--kill-on-invalid-dep): that reason explains
    (row,) = slurm.parse_squeue("6|CANCELLED|DependencyNeverSatisfied|1")
    assert (row.state, row.reason) == ("CANCELLED", "DependencyNeverSatisfied")


# --- the service on a fake site ------------------------------------------------------------------------------


@pytest.fixture
def session(aif_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    return fake_site(tmp_path, monkeypatch)


def _submit(session: Session, tmp_path: Path, name: str = "train") -> Job:
    with session() as svc:
        return svc.submit(svc.prepare(spec(tmp_path, name), SITE))


def test_a_second_submit_of_a_spec_leaves_its_name_usable(session: Session, tmp_path: Path) -> None:
    first, second = _submit(session, tmp_path), _submit(session, tmp_path)
    slurm_ = session.fake.slurm
    for job in (first, second):
        slurm_.start(job.slurm_job_id or "")
    Path(second.workdir or "", "stdout.log").write_text("second\n")
    with session() as svc, pytest.raises(BadInput, match="'train' names 2 live jobs"):
        svc.logs("train")  # both run: which one's logs would be a guess
    with session() as svc, pytest.raises(BadInput, match="'train' names 2 live jobs"):
        svc.cancel(["train"])
    assert slurm_.calls("scancel") == []  # nothing was cancelled on a guess
    slurm_.finish(first.slurm_job_id or "")
    session.notes.clear()
    with session() as svc:
        svc.status([first.id])
        job, data = svc.logs("train")  # the only live one now
    assert (job.id, data) == (second.id, b"second\n")
    assert session.notes[-1] == f"note: 'train' is job {second.id} (the live one of 2; others: {first.id} COMPLETED)"
    slurm_.finish(second.slurm_job_id or "", code=1)
    with session() as svc:
        (shown,) = svc.status(["train"])  # refreshed: both ended, the newest is meant
    assert (shown.id, shown.state, shown.exit_code) == (second.id, "FAILED", 1)


def test_pending_with_an_expected_start_then_cancel_is_stored_at_once(session: Session, tmp_path: Path) -> None:
    job = _submit(session, tmp_path)
    ahead = int(time.time()) + 300
    with session.fake.slurm._locked() as state:  # Slurm's estimate, as squeue's %S shows it
        state["jobs"][job.slurm_job_id]["start"] = ahead
    with session() as svc:
        (got,) = svc.status([job.id])
    assert (got.state, got.started_at, got.exit_code) == ("PENDING", None, None)
    assert got.expected_start == _iso(ahead) and got.to_json()["expected_start"] == _iso(ahead)
    exit_code, queued, running = output._times(got)
    assert exit_code == "" and running == "" and queued in ("0:00", "0:01", "0:02")  # not 5:00
    with session.fake.slurm._locked() as state:  # (the fake would report the estimate as sacct's Start)
        state["jobs"][job.slurm_job_id]["start"] = None
    with session() as svc:
        svc.cancel(["train"])
    with session() as svc:  # a new command, no status call: the store already knows
        (listed,) = listing.list_jobs(svc)
    assert (listed.state, listed.reason, listed.exit_code, listed.expected_start) == ("CANCELLED", None, None, None)
    assert listed.started_at is None and listed.ended_at is not None
    assert output._times(listed)[0] == ""


def test_cancel_of_a_job_that_ended_meanwhile_stores_how_it_ended(session: Session, tmp_path: Path) -> None:
    job = _submit(session, tmp_path)
    session.fake.slurm.start(job.slurm_job_id or "")
    with session() as svc:
        svc.status([job.id])  # RUNNING in the store
    session.fake.slurm.finish(job.slurm_job_id or "")  # ...and it completes before the cancel
    with session() as svc:
        svc.cancel([job.id])  # scancel of an ended job succeeds: Slurm's answer decides
    with session() as svc:
        (listed,) = listing.list_jobs(svc)
    assert (listed.state, listed.exit_code) == ("COMPLETED", 0)


def test_cancel_unconfirmed_keeps_the_state_and_says_so(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aifactory_cli.backends.slurm import SlurmBackend

    job = _submit(session, tmp_path)
    session.fake.slurm.start(job.slurm_job_id or "")
    monkeypatch.setattr(SlurmBackend, "cancel", lambda self, jobs: None)  # accepted, not yet acted on
    with session() as svc:
        svc.cancel([job.id])
    with session() as svc:
        (listed,) = listing.list_jobs(svc)
    assert listed.state == "RUNNING" and "cancel requested" in (listed.reason or "")


# --- the table's columns -------------------------------------------------------------------------------------


def test_columns_never_show_an_exit_code_before_the_end_and_queue_time_ends_at_the_start() -> None:
    running = _job("a", "t", "RUNNING", submitted_at=_at(0), started_at=_at(2), exit_code=0)
    assert output._times(running)[:2] == ("", "2:00")
    never_ran = _job("b", "t", "CANCELLED", submitted_at=_at(0), ended_at=_at(7))
    assert output._times(never_ran) == ("", "7:00", "")
    done = _job("c", "t", "FAILED", submitted_at=_at(0), started_at=_at(1), ended_at=_at(4), exit_code=3)
    assert output._times(done) == ("3", "1:00", "3:00")
    assert running.to_json()["exit_code"] is None and done.to_json()["exit_code"] == 3


# --- completion ---------------------------------------------------------------------------------------------------


def test_completion_offers_each_name_once(aif_home: Path) -> None:
    store = Store()
    for i, state in enumerate(("COMPLETED", "FAILED", "RUNNING")):
        store.add(_job(f"{i}{i}{i}{i}0000", "mytrain", state, _at(i)))
    store.add(_job("99990000", "other", "COMPLETED", _at(9)))
    store.close()
    got = completion.jobs("my")
    assert got == [("mytrain", "22220000 (local, RUNNING; 3 jobs of this name)")]
    assert [v for v, _ in completion.jobs("")].count("mytrain") == 0  # ids only for an empty word
    assert [v for v, _ in completion.jobs("2")] == ["22220000"]
