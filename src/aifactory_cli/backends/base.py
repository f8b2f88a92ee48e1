"""A site's backend: its transport (local or SSH) plus its scheduler (`slurm.SlurmBackend` or the
local runner, `local.LocalBackend`). Every remote step of one CLI command goes through one backend,
so through one connection. Here: what every backend answers, and what they share."""

from __future__ import annotations

import abc
import contextlib
import errno
import fcntl
import os
import posixpath
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aifactory_cli.errors import AifactoryError, LocalWriteError, RemoteError
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


class Backend(abc.ABC):
    kind = "base"

    def __init__(self, loaded: LoadedProfile, transport: Transport) -> None:
        self.loaded = loaded
        self.profile = loaded.profile
        self.transport = transport

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
        if not job.workdir:
            return []
        result = self.transport.run(and_then(["cd", job.workdir], ["find", ".", "-type", "f"]))
        if not result.ok:
            raise RemoteError(f"cannot list the job dir {job.workdir}: {result.stderr.strip()}")
        return sorted(line[2:] for line in result.stdout.splitlines() if line.startswith("./"))

    def fetch(self, job: Job, files: list[str], dest: Path, progress: Callable[[int], None] | None = None) -> None:
        """Copy `files` (job-dir relative) into `dest` with one tar stream, unpacked as it arrives (the
        transport writes into a FIFO that a thread reads: no archive on disk, so a 10 GiB checkpoint
        needs 10 GiB here, not 20, and is written once) in a temporary dir beside `dest`, then moved
        under the final names: a failed fetch (a cut connection, a full disk) leaves nothing
        half-written there."""
        if not files or not job.workdir:
            return
        created = not dest.exists()
        dest.mkdir(parents=True, exist_ok=True)
        received = [0]

        def counted(n: int) -> None:
            received[0] += n
            if progress:
                progress(n)

        staging = Path(tempfile.mkdtemp(prefix=".aif-fetch-", dir=dest))
        try:
            try:
                unpacked = staging / "files"
                with _Unpacker(staging / "fetch.tar", unpacked) as fifo:
                    self.transport.get_tar(job.workdir, files, fifo, counted)
                _move_into(unpacked, dest)
            except Exception as exc:
                if not transfer_failure(exc):
                    raise
                raise _fetch_error(exc, job, files, dest, received[0]) from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if created:
                with contextlib.suppress(OSError):
                    dest.rmdir()  # only when empty: ours, and nothing came
            raise
        shutil.rmtree(staging, ignore_errors=True)

    def close(self) -> None:
        self.transport.close()


class _Unpacker:
    """A FIFO at `fifo` whose tar stream a thread unpacks into `into` while the transport writes it.
    On leaving: the reader is let go if no writer ever opened the FIFO, and the error that explains
    the failure is raised: the reader's (a full disk, a damaged archive: the writer then only saw a
    broken pipe), else the writer's (a cut connection: the reader then only saw a truncated archive)."""

    def __init__(self, fifo: Path, into: Path) -> None:
        self.fifo, self.into = fifo, into
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read, name="aif-fetch-unpack", daemon=True)

    def __enter__(self) -> Path:
        os.mkfifo(self.fifo, 0o600)
        self.thread.start()
        return self.fifo

    def _read(self) -> None:
        try:
            with open(self.fifo, "rb") as fh:
                with contextlib.suppress(OSError, AttributeError):  # Linux: a 1 MiB pipe, not 64 KiB
                    fcntl.fcntl(fh.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
                try:  # 64 KiB reads: 1.03 s a GiB here; 10 KiB (the default) 1.1 s; 1 MiB 4.7 s (it slices its buffer)
                    with tarfile.open(fileobj=fh, mode="r|", bufsize=1 << 16) as tar:
                        tar.extractall(self.into, filter="data")
                    while fh.read(1 << 16):  # tar's end blocks and padding: the writer must not meet EPIPE
                        pass
                except BaseException as exc:
                    self.error = exc  # closing the FIFO now stops the writer (EPIPE) instead of draining it
        except OSError as exc:
            self.error = self.error or exc

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        while self.thread.is_alive():  # a reader still waiting for a writer (none came): an empty stream
            with contextlib.suppress(OSError):  # ends it; ENXIO: it has not opened the FIFO yet, or is done
                os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
            self.thread.join(0.05)
        local = isinstance(self.error, OSError) and not isinstance(self.error, BrokenPipeError)
        if self.error is not None and (exc is None or local or isinstance(exc, BrokenPipeError)):
            raise self.error from exc  # the writer's broken pipe only says the reader went first


def _move_into(unpacked: Path, dest: Path) -> None:
    """Every file under `unpacked` to the same relative path under `dest` (a rename: same disk)."""
    for root, _dirs, names in os.walk(unpacked):
        for name in names:
            source = Path(root) / name
            target = dest / source.relative_to(unpacked)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)


def transfer_failure(exc: Exception) -> bool:
    """A failure of the transfer itself (the connection, the local disk, the archive), not a bug:
    paramiko's errors are matched by module, so that this layer does not import paramiko."""
    if isinstance(exc, (RemoteError, OSError, EOFError, tarfile.TarError)):
        return True
    return type(exc).__module__.split(".")[0] == "paramiko"


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _fetch_error(exc: BaseException, job: Job, files: list[str], dest: Path, received: int) -> AifactoryError:
    """A failed fetch as an exit-3 error that says what was and was not transferred."""
    what = f"{len(files)} file(s) of job {job.id}" if len(files) != 1 else f"{files[0]} of job {job.id}"
    left = f"{received:,} bytes of the archive had arrived; nothing was written under {dest}"
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        return LocalWriteError(
            f"cannot fetch {what}: {os.strerror(exc.errno or 0).lower()} while writing in {dest} ({left})",
            "free space there (or fetch into another --dest) and run the fetch again",
        )
    if isinstance(exc, RemoteError):
        return RemoteError(f"fetch of {what} failed: {exc.message} ({left})", exc.hint, where=exc.where)
    if isinstance(exc, tarfile.TarError):
        return RemoteError(f"fetch of {what} failed: the archive from the site is damaged ({exc}; {left})")
    return RemoteError(f"fetch of {what} failed: {type(exc).__name__}: {exc} ({left})", "run the fetch again")
