"""The job store: `update()` changes the row and the caller's job together, or neither."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aifactory_cli.errors import StoreError
from aifactory_cli.jobs.model import Job, Task, now_iso
from aifactory_cli.jobs.store import Store


def _job() -> Job:
    now = now_iso()
    return Job(
        id="a1b2c3d4", token="t" * 32, name="train", site="lumi", state="PREPARED", created_at=now, updated_at=now
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def test_update_changes_row_job_events_and_tasks(store: Store) -> None:
    job = store.add(_job())
    store.update(job, state="PENDING", slurm_job_id="42", extra={"a": 1}, tasks=[Task(task_id=0, state="PENDING")])
    assert (job.state, job.slurm_job_id, job.extra) == ("PENDING", "42", {"a": 1})
    again = store.get(job.id)
    assert again is not None and (again.state, again.slurm_job_id, again.extra) == ("PENDING", "42", {"a": 1})
    assert [e["state"] for e in store.events(job.id)] == ["PREPARED", "PENDING"]
    store.update(job, workdir="/w", tasks=None)  # no state change: no event; tasks=None keeps them
    assert [e["state"] for e in store.events(job.id)] == ["PREPARED", "PENDING"]
    assert job.tasks == [Task(task_id=0, state="PENDING")]


def test_update_with_an_unknown_column_is_a_bug_and_changes_nothing(store: Store) -> None:
    """Before: the job was changed in memory, then SQLite's "no such column" came out as a
    StoreError ("cannot write the job store", exit 3: a disk problem)."""
    job = store.add(_job())
    before = (job.state, job.updated_at)
    with pytest.raises(TypeError, match="'stat'"):
        store.update(job, state="RUNNING", stat="RUNNING")
    assert (job.state, job.updated_at) == before
    stored = store.get(job.id)
    assert stored is not None and stored.state == "PREPARED"
    with pytest.raises(TypeError, match="'id'"):  # the row's key is not a field to change
        store.update(job, id="other")


class _FailingWrites:
    """A connection whose UPDATEs fail like a full disk."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("UPDATE jobs"):
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, *args)


def test_a_failed_write_leaves_the_callers_job_as_it_was(store: Store) -> None:
    job = store.add(_job())
    real = store.conn
    store.conn = _FailingWrites(real)  # type: ignore[assignment]
    try:
        with pytest.raises(StoreError, match="cannot write the job store"):
            store.update(job, state="PENDING", slurm_job_id="42", extra={"a": 1})
    finally:
        store.conn = real
    assert (job.state, job.slurm_job_id, job.extra) == ("PREPARED", None, {})


def test_an_open_that_meets_another_processs_checkpoint_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite answers "database is locked" at once (no busy wait) when a connection opens while another
    process's last connection checkpoints the WAL: three `submit --wait` at once met it in CI."""
    import aifactory_cli.jobs.store as store_module

    Store(tmp_path / "jobs.sqlite3").close()
    real_connect = sqlite3.connect
    refusals = {"left": 2}

    class Refusing:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __getattr__(self, name: str) -> Any:
            return getattr(self.conn, name)

        def __setattr__(self, name: str, value: Any) -> None:
            if name == "conn":
                object.__setattr__(self, name, value)
            else:
                setattr(self.conn, name, value)

        def execute(self, sql: str, *args: Any) -> Any:
            if sql.startswith("PRAGMA journal_mode") and refusals["left"]:
                refusals["left"] -= 1
                raise sqlite3.OperationalError("database is locked")
            return self.conn.execute(sql, *args)

    monkeypatch.setattr(store_module.sqlite3, "connect", lambda *a, **k: Refusing(real_connect(*a, **k)))
    store = Store(tmp_path / "jobs.sqlite3")
    assert refusals["left"] == 0
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_an_open_that_stays_locked_past_its_patience_is_a_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import aifactory_cli.jobs.store as store_module

    real_connect = store_module._connect
    started: list[float] = []

    def impatient(path: Path) -> sqlite3.Connection:
        started.append(time.monotonic())
        return real_connect(path, patience=0.3)

    class Locked:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def execute(self, sql: str, *args: Any) -> Any:
            raise sqlite3.OperationalError("database is locked")

        def close(self) -> None:
            self.conn.close()

        row_factory = None

    real_sqlite_connect = sqlite3.connect
    tries: list[int] = []

    def connect(*a: Any, **k: Any) -> Locked:
        tries.append(1)
        return Locked(real_sqlite_connect(*a, **k))

    monkeypatch.setattr(store_module, "_connect", impatient)
    monkeypatch.setattr(store_module.sqlite3, "connect", connect)
    with pytest.raises(StoreError, match=r"cannot open the job store .*database is locked"):
        Store(tmp_path / "jobs.sqlite3")
    assert len(tries) >= 3  # tried again, with pauses, then gave up well within its patience
    assert 0.1 < time.monotonic() - started[0] < 5
