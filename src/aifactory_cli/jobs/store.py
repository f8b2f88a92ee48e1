"""The local job store: SQLite in the state dir (WAL, one transaction per change, schema version,
migrations). Jobs, their array tasks, and an event per state change."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from aifactory_cli import paths
from aifactory_cli.errors import BadInput, NotFound, StoreError
from aifactory_cli.jobs import refs
from aifactory_cli.jobs.model import Job, Task, now_iso
from aifactory_cli.scheduler.slurm_site import SiteFacts
from aifactory_cli.states import FINAL_STATES, LIVE_STATES

SCHEMA_VERSION = 3

_SCHEMA = [
    # version 1
    """
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        token TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        site TEXT NOT NULL,
        slurm_job_id TEXT,
        state TEXT NOT NULL,
        slurm_state TEXT,
        exit_code INTEGER,
        reason TEXT,
        workdir TEXT,
        array_size INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        submitted_at TEXT,
        started_at TEXT,
        ended_at TEXT,
        updated_at TEXT NOT NULL,
        polled_at REAL,
        spec_path TEXT,
        spec_json TEXT,
        script TEXT,
        profile_name TEXT,
        profile_version INTEGER,
        profile_digest TEXT,
        template_digest TEXT,
        provenance_hash TEXT,
        extra TEXT
    );
    CREATE INDEX IF NOT EXISTS jobs_site_state ON jobs (site, state);
    CREATE INDEX IF NOT EXISTS jobs_site_slurm ON jobs (site, slurm_job_id);
    CREATE TABLE IF NOT EXISTS tasks (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        task_id INTEGER NOT NULL,
        slurm_job_id TEXT,
        state TEXT NOT NULL,
        slurm_state TEXT,
        exit_code INTEGER,
        reason TEXT,
        started_at TEXT,
        ended_at TEXT,
        PRIMARY KEY (job_id, task_id)
    );
    CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL,
        at TEXT NOT NULL,
        state TEXT NOT NULL,
        slurm_state TEXT,
        reason TEXT
    );
    CREATE INDEX IF NOT EXISTS events_job ON events (job_id);
    CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    """,
    # version 2: Slurm's expected start of a pending job, apart from the real start (started_at)
    """
    ALTER TABLE jobs ADD COLUMN expected_start TEXT;
    """,
    # version 3: what `sites check` learnt about each site's Slurm (scheduler.slurm_site.SiteFacts)
    """
    CREATE TABLE IF NOT EXISTS site_facts (site TEXT PRIMARY KEY, facts TEXT NOT NULL, checked_at TEXT NOT NULL);
    """,
]


# the jobs table's columns: every field of Job but its tasks (a table of their own)
_JOB_COLUMNS = tuple(f.name for f in fields(Job) if f.name != "tasks")
# what `update()` may change: `id` names the row, `updated_at` is set by the update itself
_UPDATABLE = frozenset(_JOB_COLUMNS) - {"id", "updated_at"} | {"tasks"}


def _connect(path: Path, patience: float = 60.0) -> sqlite3.Connection:
    """A connection in WAL mode. SQLite answers "database is locked" at once, without waiting the busy
    timeout, when a connection opens while the last one of another process closes and checkpoints the
    WAL (seen with three `submit --wait` at once): such an open is tried again for up to `patience` s."""
    deadline = time.monotonic() + patience
    pause = 0.02
    while True:
        conn = sqlite3.connect(str(path), timeout=60, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 60000")
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the first read, tried here too
            return conn
        except sqlite3.OperationalError as exc:
            conn.close()
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


class Store:
    def __init__(self, path: Path | None = None, notify: Callable[[str], None] | None = None) -> None:
        self.notify = notify  # where `find` says which job a name was taken to mean
        self._noted: set[str] = set()
        if path is None:
            try:
                paths.ensure_private_dir(paths.config_dir())
                path = paths.ensure_private_dir(paths.state_dir()) / "jobs.sqlite3"
            except OSError as exc:
                raise StoreError(
                    f"cannot create the state dir {paths.state_dir()}: {exc}",
                    "set AIFACTORY_HOME to a writable directory",
                ) from exc
        self.path = path
        try:
            if not path.exists():  # private from the start (SQLite gives -wal/-shm the same mode)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            self.conn = _connect(path)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise StoreError(
                    f"the job store {path} is damaged: {exc}",
                    f"move it aside (mv {path} {path}.damaged), then `aifactory sync --site SITE` "
                    "rebuilds the list of jobs from each site's job directories",
                ) from exc
            raise StoreError(
                f"cannot open the job store {path}: {_diagnose(path, exc)}",
                "free space or make the state dir writable (AIFACTORY_HOME moves it); nothing was changed",
            ) from exc

    def close(self) -> None:
        self.conn.close()

    # --- plumbing --------------------------------------------------------------------------------

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._write_error(exc, "nothing was changed") from exc
        try:
            yield self.conn
        except sqlite3.OperationalError as exc:
            self.conn.execute("ROLLBACK")
            raise self._write_error(exc, "the store was not changed") from exc
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self.conn.execute("ROLLBACK")
                raise self._write_error(exc, "the store was not changed") from exc

    def _write_error(self, exc: sqlite3.OperationalError, outcome: str) -> StoreError:
        return StoreError(
            f"cannot write the job store {self.path}: {_diagnose(self.path, exc)}",
            f"free space or make the state dir writable; {outcome}",
        )

    def _migrate(self) -> None:
        current = 0
        has_meta = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if has_meta:
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"the job store {self.path} has schema version {current}, newer than this aifactory ({SCHEMA_VERSION})",
                "upgrade aifactory, or point AIFACTORY_HOME elsewhere",
            )
        if current == SCHEMA_VERSION:
            return
        with self.tx() as c:
            row = c.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
            if row:
                got = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                current = int(got[0]) if got else 0
            for version in range(current, SCHEMA_VERSION):
                for statement in _SCHEMA[version].split(";"):
                    if statement.strip():
                        c.execute(statement)
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    # --- jobs --------------------------------------------------------------------------------------

    def _row_to_job(self, row: sqlite3.Row, tasks: list[Task] | None = None) -> Job:
        data = dict(row)
        data["extra"] = json.loads(data["extra"]) if data.get("extra") else {}
        return Job(**data, tasks=tasks or [])

    def _tasks_for(self, ids: list[str]) -> dict[str, list[Task]]:
        out: dict[str, list[Task]] = {}
        for chunk_start in range(0, len(ids), 500):
            chunk = ids[chunk_start : chunk_start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(f"SELECT * FROM tasks WHERE job_id IN ({marks}) ORDER BY task_id", chunk):
                d = dict(row)
                job_id = d.pop("job_id")
                out.setdefault(job_id, []).append(Task(**d))
        return out

    def _jobs(self, where: str = "", params: tuple[Any, ...] = ()) -> list[Job]:
        rows = self.conn.execute(f"SELECT * FROM jobs {where}", params).fetchall()
        array_ids = [r["id"] for r in rows if r["array_size"]]
        tasks = self._tasks_for(array_ids) if array_ids else {}
        return [self._row_to_job(r, tasks.get(r["id"])) for r in rows]

    def add(self, job: Job) -> Job:
        values = asdict(job)
        values.pop("tasks")
        values["extra"] = json.dumps(job.extra)
        cols = ",".join(_JOB_COLUMNS)
        marks = ",".join("?" * len(_JOB_COLUMNS))
        with self.tx() as c:
            try:
                c.execute(f"INSERT INTO jobs ({cols}) VALUES ({marks})", [values[k] for k in _JOB_COLUMNS])
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"job {job.id} ({job.token}) is already in the store") from exc
            c.execute(
                "INSERT INTO events (job_id, at, state, slurm_state, reason) VALUES (?,?,?,?,?)",
                (job.id, job.updated_at, job.state, job.slurm_state, job.reason),
            )
            self._write_tasks(c, job)
        return job

    def _write_tasks(self, c: sqlite3.Connection, job: Job) -> None:
        for t in job.tasks:
            c.execute(
                "INSERT OR REPLACE INTO tasks (job_id, task_id, slurm_job_id, state, slurm_state, exit_code,"
                " reason, started_at, ended_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    job.id,
                    t.task_id,
                    t.slurm_job_id,
                    t.state,
                    t.slurm_state,
                    t.exit_code,
                    t.reason,
                    t.started_at,
                    t.ended_at,
                ),
            )

    def update(self, job: Job, **changes: Any) -> Job:
        """Change fields of `job` in one transaction; a new state also records an event.
        A name that is not a job column is a bug in the caller: TypeError, before anything changes."""
        unknown = sorted(set(changes) - _UPDATABLE)
        if unknown:
            raise TypeError(f"Store.update() got no job column {', '.join(map(repr, unknown))}")
        if changes.get("tasks", ()) is None:
            del changes["tasks"]
        after = replace(job, **changes, updated_at=now_iso())
        columns = {k: getattr(after, k) for k in changes if k != "tasks"}
        if "extra" in columns:
            columns["extra"] = json.dumps(after.extra)
        columns["updated_at"] = after.updated_at
        sets = ",".join(f"{k} = ?" for k in columns)
        with self.tx() as c:
            c.execute(f"UPDATE jobs SET {sets} WHERE id = ?", [*columns.values(), job.id])
            if (after.state, after.slurm_state, after.reason) != (job.state, job.slurm_state, job.reason):
                c.execute(
                    "INSERT INTO events (job_id, at, state, slurm_state, reason) VALUES (?,?,?,?,?)",
                    (job.id, after.updated_at, after.state, after.slurm_state, after.reason),
                )
            if "tasks" in changes:
                self._write_tasks(c, after)
        for key in [*changes, "updated_at"]:  # the caller's job changes once the store has
            setattr(job, key, getattr(after, key))
        return job

    def delete(self, job: Job) -> None:
        """Forget a job that never reached the scheduler (e.g. sbatch refused it)."""
        with self.tx() as c:
            c.execute("DELETE FROM tasks WHERE job_id = ?", (job.id,))
            c.execute("DELETE FROM events WHERE job_id = ?", (job.id,))
            c.execute("DELETE FROM jobs WHERE id = ?", (job.id,))

    def mark_polled(self, jobs: list[Job], at: float | None = None) -> None:
        at = at if at is not None else time.time()
        with self.tx() as c:
            c.executemany("UPDATE jobs SET polled_at = ? WHERE id = ?", [(at, j.id) for j in jobs])
        for j in jobs:
            j.polled_at = at

    def get(self, job_id: str) -> Job | None:
        jobs = self._jobs("WHERE id = ?", (job_id,))
        return jobs[0] if jobs else None

    def by_token(self, token: str) -> Job | None:
        jobs = self._jobs("WHERE token = ?", (token,))
        return jobs[0] if jobs else None

    def find(self, ref: str) -> Job:
        """A job by local id (or a unique prefix), `SITE:SLURM_JOB_ID`, or a name (the rule and its
        notes: `jobs.refs`); a note on what was chosen among jobs of one name goes to `notify`, once."""
        ref = ref.strip()
        if not ref:
            raise BadInput("an empty job reference", "use the id printed by submit, SITE:JOBID or a name")
        job = self.get(ref)
        if job:
            return job
        if ":" in ref:
            site, _, sid = ref.partition(":")
            base = sid.split("_", 1)[0]
            jobs = self._jobs("WHERE site = ? AND slurm_job_id = ?", (site, base))
            if jobs:
                return jobs[0]
            raise NotFound(
                f"no tracked job {ref}",
                "`aifactory list` shows tracked jobs; `aifactory sync` recovers jobs from the site",
            )
        prefixed = self._jobs("WHERE id LIKE ? ESCAPE '\\'", (_like_prefix(ref),))
        # newest first; rowid breaks ties between jobs created in the same second
        named = self._jobs("WHERE name = ? ORDER BY created_at DESC, rowid DESC", (ref,))
        choice = refs.choose(ref, named, prefixed)
        if choice.note and self.notify and ref not in self._noted:
            self._noted.add(ref)
            self.notify(choice.note)
        return choice.job

    def query(
        self,
        site: str | None = None,
        states: list[str] | None = None,
        name: str | None = None,
        limit: int | None = None,
        live_only: bool = False,
    ) -> list[Job]:
        clauses: list[str] = []
        params: list[Any] = []
        if site:
            clauses.append("site = ?")
            params.append(site)
        if live_only:
            states = sorted(LIVE_STATES)
        if states:
            clauses.append(f"state IN ({','.join('?' * len(states))})")
            params.extend(states)
        if name:
            clauses.append("name = ?")
            params.append(name)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        where += " ORDER BY created_at, id"
        if limit:
            where += f" LIMIT {int(limit)}"
        return self._jobs(where, tuple(params))

    def recent(self, hours: float) -> list[Job]:
        """Jobs that ended (or changed) in the last `hours`."""
        since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours)).replace(microsecond=0).isoformat()
        marks = ",".join("?" * len(FINAL_STATES))
        return self._jobs(
            f"WHERE state IN ({marks}) AND updated_at >= ? ORDER BY created_at, id", (*sorted(FINAL_STATES), since)
        )

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in self.conn.execute(
                "SELECT at, state, slurm_state, reason FROM events WHERE job_id = ? ORDER BY id", (job_id,)
            )
        ]

    # --- sites --------------------------------------------------------------------------------------

    def save_site_facts(self, site: str, facts: SiteFacts) -> None:
        """Replace what is known about `site`'s Slurm (the newest `sites check` wins)."""
        with self.tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO site_facts (site, facts, checked_at) VALUES (?, ?, ?)",
                (site, json.dumps(asdict(facts)), facts.checked_at or now_iso()),
            )

    def site_facts(self, site: str) -> SiteFacts | None:
        """What the last `sites check SITE` recorded; None if it never ran."""
        row = self.conn.execute("SELECT facts FROM site_facts WHERE site = ?", (site,)).fetchone()
        return SiteFacts.from_dict(json.loads(row[0])) if row else None

    def next_counter(self, name: str) -> int:
        with self.tx() as c:
            row = c.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
            value = (row[0] if row else 0) + 1
            c.execute("INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)", (name, value))
        return value

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])


def _diagnose(path: Path, exc: Exception) -> str:
    """The likely cause of an SQLite error, in words: read-only file system, no space, ..."""
    import errno
    import os

    text = str(exc)
    try:
        vfs = os.statvfs(path.parent)
        if vfs.f_flag & os.ST_RDONLY:
            return f"the file system of {path.parent} is read-only ({text})"
        if vfs.f_bavail * vfs.f_frsize < 64 * 1024 or "full" in text:
            return f"no space left on the device of {path.parent} ({text})"
    except OSError as os_exc:
        if os_exc.errno == errno.ENOENT:
            return f"{path.parent} does not exist ({text})"
    if not os.access(path.parent, os.W_OK):
        return f"{path.parent} is not writable ({text})"
    return text


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
