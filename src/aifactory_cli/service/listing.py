"""`list` and shell completion: the tracked jobs, from the local store alone (no remote call).

Light on purpose: `aifactory list` and every TAB press import this, so it imports the store and
nothing that loads models, templates or the SSH stack. `Job` is re-exported for the CLI's tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aifactory_cli import paths
from aifactory_cli.errors import BadInput, did_you_mean
from aifactory_cli.jobs.store import Job, Store
from aifactory_cli.states import ALL_STATES

if TYPE_CHECKING:
    from aifactory_cli.service.session import Service


def check_states(names: list[str]) -> list[str]:
    """`--state` values, upper-cased; an unknown one is bad input with the nearest state."""
    wanted = [s.upper() for s in names]
    for s in wanted:
        if s not in ALL_STATES:
            guess = did_you_mean(s, list(ALL_STATES))
            raise BadInput(
                f"unknown state '{s}'", f"did you mean {guess}?" if guess else f"states: {', '.join(ALL_STATES)}"
            )
    return wanted


def list_jobs(
    svc: Service,
    site: str | None = None,
    states: list[str] | None = None,
    name: str | None = None,
    limit: int | None = None,
) -> list[Job]:
    """The tracked jobs, oldest first, filtered; `limit`: only the newest N."""
    wanted = check_states(states or [])  # before the store is opened (or created)
    jobs = svc.store.query(site=site, states=wanted or None, name=name)
    return jobs[-limit:] if limit else jobs


def tracked_jobs() -> list[Job]:
    """Every tracked job, for completion: no store is created where there is none yet."""
    db = paths.state_dir() / "jobs.sqlite3"
    if not db.is_file():
        return []
    store = Store(db)
    try:
        return store.query()
    finally:
        store.close()


__all__ = ["Job", "check_states", "list_jobs", "tracked_jobs"]
