"""`list` and completion's job list, in-process, over a store in a temp AIFACTORY_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest

from aifactory_cli import paths
from aifactory_cli.errors import BadInput
from aifactory_cli.jobs.store import Job, Store
from aifactory_cli.service import listing
from aifactory_cli.service.session import Service

JOBS = [  # (id, name, site, state), oldest first
    ("aaaa0001", "train", "lumi", "COMPLETED"),
    ("aaaa0002", "train", "jupiter", "FAILED"),
    ("aaaa0003", "eval", "lumi", "RUNNING"),
    ("aaaa0004", "train", "lumi", "PENDING"),
    ("aaaa0005", "eval", "local", "COMPLETED"),
]


def _add(store: Store) -> None:
    for i, (job_id, name, site, state) in enumerate(JOBS):
        at = f"2026-11-30T10:00:0{i}+00:00"
        store.add(Job(id=job_id, token=job_id * 4, name=name, site=site, state=state, created_at=at, updated_at=at))


@pytest.fixture
def svc(aif_home: Path):
    with Service() as service:
        _add(service.store)
        yield service


def _ids(jobs: list[Job]) -> list[str]:
    return [j.id for j in jobs]


def test_list_jobs_filters_by_site_state_and_name(svc: Service) -> None:
    assert _ids(listing.list_jobs(svc)) == [j[0] for j in JOBS]  # oldest first
    assert _ids(listing.list_jobs(svc, site="lumi")) == ["aaaa0001", "aaaa0003", "aaaa0004"]
    assert _ids(listing.list_jobs(svc, states=["completed"])) == ["aaaa0001", "aaaa0005"]  # any case
    assert _ids(listing.list_jobs(svc, states=["RUNNING", "pending"])) == ["aaaa0003", "aaaa0004"]
    assert _ids(listing.list_jobs(svc, name="train")) == ["aaaa0001", "aaaa0002", "aaaa0004"]
    assert _ids(listing.list_jobs(svc, site="lumi", states=["COMPLETED"], name="train")) == ["aaaa0001"]
    assert listing.list_jobs(svc, site="vega") == [] and listing.list_jobs(svc, name="nope") == []


def test_limit_keeps_the_newest(svc: Service) -> None:
    assert _ids(listing.list_jobs(svc, limit=2)) == ["aaaa0004", "aaaa0005"]
    assert _ids(listing.list_jobs(svc, name="train", limit=1)) == ["aaaa0004"]
    assert len(listing.list_jobs(svc, limit=99)) == len(JOBS)
    assert len(listing.list_jobs(svc, limit=0)) == len(JOBS)  # 0: no limit


def test_check_states_names_the_nearest_state(aif_home: Path) -> None:
    assert listing.check_states(["running", "Completed"]) == ["RUNNING", "COMPLETED"]
    assert listing.check_states([]) == []
    with pytest.raises(BadInput) as info:
        listing.check_states(["runing"])
    assert info.value.message == "unknown state 'RUNING'" and info.value.hint == "did you mean RUNNING?"
    with pytest.raises(BadInput) as info:
        listing.check_states(["xyzzy"])
    assert (info.value.hint or "").startswith("states: ") and "COMPLETED" in (info.value.hint or "")


def test_an_unknown_state_is_refused_before_a_store_is_created(aif_home: Path) -> None:
    with Service() as svc, pytest.raises(BadInput):
        listing.list_jobs(svc, states=["DONE"])
    assert not (paths.state_dir() / "jobs.sqlite3").exists()


def test_tracked_jobs_for_completion(aif_home: Path) -> None:
    assert listing.tracked_jobs() == []
    assert not paths.state_dir().exists()  # completion creates no store
    store = Store()
    _add(store)
    store.close()
    assert [(j.id, j.name, j.state) for j in listing.tracked_jobs()] == [(i, n, s) for i, n, _, s in JOBS]
