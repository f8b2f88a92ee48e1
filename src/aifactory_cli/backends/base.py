"""A site's backend: its transport (local or SSH) plus its scheduler (`slurm.SlurmBackend` or the
local runner, `local.LocalBackend`). Every remote step of one CLI command goes through one backend,
so through one connection. Here: what every backend answers, and what they share."""

from __future__ import annotations

import abc
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aifactory_cli.backends import fetching
from aifactory_cli.errors import RemoteError
from aifactory_cli.jobs import jobdir
from aifactory_cli.jobs.model import Job, Task
from aifactory_cli.jobs.staging import UploadPlan
from aifactory_cli.sites.profile import LoadedProfile
from aifactory_cli.transport import Transport, and_then


@dataclass
class Update:
    """What the site says about one job now."""

    state: str
    slurm_state: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    tasks: list[Task] = field(default_factory=list)
    expected_start: str | None = None  # the scheduler's estimate while pending; None once started
    # a checkpointed run: its current Slurm job (a chain's newest segment) and its segments (JSON)
    slurm_job_id: str | None = None
    segments: list[dict[str, Any]] | None = None


LIST_SIZED = "find . -type f -printf 'F %s %T@ %P\\n' 2>/dev/null || find . -type f"


class Backend(abc.ABC):
    kind = "base"

    def __init__(self, loaded: LoadedProfile, transport: Transport) -> None:
        self.loaded = loaded
        self.profile = loaded.profile
        self.transport = transport
        self._listed: dict[str, dict[str, fetching.Listed]] = {}  # job dir -> what list_files saw

    # --- what each backend does its own way ----------------------------------------------------

    @abc.abstractmethod
    def workdir_for(self, job: Job, account: str | None, user: str | None) -> str: ...

    @abc.abstractmethod
    def cache_dir_for(self, workdir: str, key: str) -> str: ...

    @abc.abstractmethod
    def data_dir_for(self, account: str | None, user: str | None) -> str:
        """The site's data store for this account (the spec's `data:`), as its commands take it."""

    @abc.abstractmethod
    def jobs_root_for(self, account: str | None, user: str | None) -> tuple[str, int]:
        """Where this account's job dirs are, as the site's commands take it, and how many path
        components below it a job dir is (`data gc` looks there for links into the store)."""

    @abc.abstractmethod
    def submit(
        self, job: Job, plan: UploadPlan, workdir: str, progress: Callable[[int], None] | None = None
    ) -> tuple[str, str]:
        """Create the job dir, stage the plan, submit; return (scheduler job id, absolute workdir)."""

    @abc.abstractmethod
    def poll(self, jobs: list[Job]) -> dict[str, Update]: ...

    @abc.abstractmethod
    def cancel(self, jobs: list[Job]) -> None: ...

    def ended(self, jobs: list[Job]) -> dict[str, bool]:
        """Whether each of `jobs` has ended, by its job dir alone (every exit-code file the batch
        script writes when it ends is there), for all of them in one cheap remote command; a job
        whose dir cannot be read is left out. Only a hint that the scheduler should be asked: the
        scheduler stays the judge of the state."""
        watched = [j for j in jobs if j.workdir]
        if not watched:
            return {}
        result = self.transport.run(jobdir.watch_command([j.workdir or "" for j in watched]))
        if not result.ok:
            return {}
        found = jobdir.parse_watch(result.stdout, len(watched))
        return {
            job.id: jobdir.has_ended(names, job.array_size)
            for job, names in zip(watched, found, strict=True)
            if names is not None
        }

    # --- shared file operations (work over any transport) --------------------------------------

    def read_log(self, job: Job, stderr: bool = False, task: int | None = None, offset: int = 0) -> bytes:
        if not job.workdir:
            return b""
        name = jobdir.log_name(stderr, task if job.array_size else None)
        try:
            return self.transport.read_bytes(posixpath.join(job.workdir, name), offset)
        except FileNotFoundError:
            return b""

    def list_files(self, job: Job) -> list[str]:
        """The job dir's files (relative paths); their sizes and mtimes are kept for `fetch`."""
        if not job.workdir:
            return []
        # GNU find prints size and mtime; another find (BSD, on a laptop's local site) lists names only
        result = self.transport.run(f"{and_then(['cd', job.workdir])} && {{ {LIST_SIZED}; }}")
        if not result.ok:
            raise RemoteError(f"cannot list the job dir {job.workdir}: {result.stderr.strip()}")
        listed = fetching.parse_listing(result.stdout)
        self._listed[job.workdir] = listed
        return sorted(listed)

    def fetch(
        self, job: Job, files: list[str], dest: Path, progress: Callable[[int], None] | None = None
    ) -> fetching.FetchReport:
        """Copy `files` (job-dir relative) into `dest`: checked against the site's sha256, large ones
        resumable after a cut, nothing half-written under a final name (`backends/fetching.py`)."""
        if not files or not job.workdir:
            return fetching.FetchReport()
        if job.workdir not in self._listed:
            self.list_files(job)
        return fetching.fetch_files(self.transport, job, files, self._listed[job.workdir], dest, progress)

    def close(self) -> None:
        self.transport.close()
