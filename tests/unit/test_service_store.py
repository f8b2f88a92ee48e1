"""The job store's schema migrations, as the service meets them: an old store is upgraded in place
with its jobs kept, a store from a newer aifactory is refused (exit 3) and left untouched."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aifactory_cli.errors import EXIT_REMOTE, StoreError
from aifactory_cli.jobs import store as store_mod
from aifactory_cli.jobs.store import Job, Store, now_iso

ADDED = "CREATE TABLE notes (job_id TEXT, note TEXT)"


def _job(job_id: str) -> Job:
    return Job(id=job_id, token=job_id * 4, name="j", site="local", state="PENDING",
               created_at=now_iso(), updated_at=now_iso(), slurm_job_id="1")  # fmt: skip


def _db(aif_home: Path) -> Path:
    (path,) = aif_home.rglob("jobs.sqlite3")
    return path


def test_reopening_keeps_the_jobs_and_does_not_migrate_again(aif_home: Path) -> None:
    first = Store()
    first.add(_job("aaaa1111"))
    first.close()
    second = Store()
    try:
        assert [j.id for j in second.query()] == ["aaaa1111"]
    finally:
        second.close()


def test_a_store_from_a_newer_aifactory_is_refused_and_kept(aif_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Store().close()
    newer = store_mod.SCHEMA_VERSION + 1
    monkeypatch.setattr(store_mod, "_SCHEMA", [*store_mod._SCHEMA[: newer - 1], ADDED])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", newer)  # written by a newer aifactory...
    Store().close()
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", newer - 1)  # ...opened by this one
    before = _db(aif_home).read_bytes()
    with pytest.raises(StoreError) as info:
        Store()
    assert info.value.exit_code == EXIT_REMOTE and f"schema version {newer}, newer than" in info.value.message
    assert _db(aif_home).read_bytes() == before


def test_an_old_store_is_upgraded_in_place(aif_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a migration added by a later version, applied to a store of the current one
    monkeypatch.setattr(store_mod, "_SCHEMA", [*store_mod._SCHEMA[: store_mod.SCHEMA_VERSION], ADDED])
    first = Store()
    first.add(_job("bbbb2222"))
    first.close()
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", store_mod.SCHEMA_VERSION + 1)
    upgraded = Store()
    try:
        assert [j.id for j in upgraded.query()] == ["bbbb2222"]
    finally:
        upgraded.close()
    conn = sqlite3.connect(_db(aif_home))
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert "notes" in tables
