"""`fetch`: a job's files from its job dir into a local dir, checked, resumable, never half-written.

- Small files (< LARGE) come in one tar stream, unpacked as it arrives: the transport writes into a
  FIFO that a thread reads (`Unpacker`), so there is no archive on disk. They land in a temporary
  dir beside the destination.
- Each large file is appended to its partial copy in `DEST/.aif-partial/` (`tail -c +OFFSET`; over
  the connection agent, the agent writes the file itself). A cut fetch resumes inside the file at
  the next attempt, as long as the site's file still has the size and mtime it had.
- Every file is checked end to end. The small files' stream is hashed on the site as tar writes it
  (OpenSSL or sha256sum there, `transport.tofile.PICK_SHA256`) and here as it arrives: the same
  digest, with tar's exit status 0 (it read every file whole, none changed meanwhile), settles them
  all. Otherwise (a file changed while tar read it, a site that gave no digest) each file's sha256
  here is checked against the site's. A large file is hashed there while it is sent. A mismatch is
  exit 3 naming the file, and its copy is dropped.
- Only then is each file moved under its final name (a rename: same disk). A failed fetch leaves
  nothing half-written under a final name."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aifactory_cli.errors import AifactoryError, LocalWriteError, RemoteError
from aifactory_cli.jobs.datastore import PICK_SHA256
from aifactory_cli.jobs.model import Job
from aifactory_cli.transport import Bulk, Transport
from aifactory_cli.transport.tarstream import TarReader

LARGE = 64 * 1024 * 1024  # files this size and up are fetched one by one, resumable inside the file
PARTIAL = ".aif-partial"
MISSING_RC = 44
_DIGEST = re.compile(r"^([0-9a-f]{64}) [ *]?(.*)$")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@dataclass
class Listed:
    """A job-dir file as the site listed it: size in bytes and mtime (as find prints it)."""

    size: int
    mtime: str


def parse_listing(stdout: str) -> dict[str, Listed]:
    """`F SIZE MTIME NAME` lines (GNU find), or `./NAME` lines (another find: size unknown, 0)."""
    listed: dict[str, Listed] = {}
    for line in stdout.splitlines():
        if line.startswith("F "):
            parts = line.split(" ", 3)
            if len(parts) == 4 and parts[1].isdigit():
                listed[parts[3]] = Listed(int(parts[1]), parts[2])
        elif line.startswith("./"):
            listed[line[2:]] = Listed(0, "")
    return listed


@dataclass
class FetchReport:
    checked: int = 0  # files whose sha256 matched the site's
    resumed: int = 0  # bytes that an earlier, cut fetch had brought already
    received: int = 0  # bytes that came over in this fetch
    kept: dict[str, int] = field(default_factory=dict)  # a cut large file -> bytes kept for the next fetch
    via: str | None = None  # the path the large files took when not the transport's own (transport/ssh/mux.py)


class ChecksumMismatch(RemoteError):
    """A fetched file's sha256 is not the site's."""


def fetch_files(
    transport: Transport,
    job: Job,
    files: list[str],
    listed: dict[str, Listed],
    dest: Path,
    progress: Callable[[int], None] | None = None,
) -> FetchReport:
    """Copy `files` (job-dir relative) into `dest` (see the module docstring)."""
    report = FetchReport()
    if not files or not job.workdir:
        return report
    workdir = job.workdir

    def counted(n: int) -> None:
        report.received += n
        if progress:
            progress(n)

    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    large = [f for f in files if f in listed and listed[f].size >= LARGE]
    small = [f for f in files if f not in large]
    staging = Path(tempfile.mkdtemp(prefix=".aif-fetch-", dir=dest))
    partial = dest / PARTIAL
    try:
        try:
            arrived: dict[str, str | Path] = {}  # name -> where it waits (checked)
            if small:
                unpacked = staging / "files"
                unpacker = Unpacker(staging / "fetch.tar", unpacked)
                with unpacker as fifo:
                    whole = transport.get_tar(workdir, small, fifo, counted)
                if not whole:  # the stream's digest did not settle it: each file, here and there
                    check_small(job, small, site_digests(transport, job, small), local_digests(unpacked, small))
                arrived.update({f: os.path.join(unpacked, f) for f in small})
            bulk: Bulk = transport
            if large:
                from aifactory_cli.transport.ssh.mux import bulk_transport, bulk_via

                bulk = bulk_transport(transport, sum(listed[f].size for f in large))
                report.via = bulk_via(bulk)
            for name in large:
                arrived[name] = fetch_large(bulk, job, name, listed[name], partial, counted, report)
            report.checked = len(arrived)
            moved = move_new_dirs(staging / "files", dest, small) if small else set()
            made: set[Path] = set()
            for name, path in arrived.items():
                if name in moved:
                    continue
                if (dest / name).parent not in made:
                    (dest / name).parent.mkdir(parents=True, exist_ok=True)
                    made.add((dest / name).parent)
                os.replace(path, dest / name)
            for name in large:
                (partial / f"{_key(job, name)}.json").unlink(missing_ok=True)
        except Exception as exc:
            if not transfer_failure(exc) or isinstance(exc, ChecksumMismatch):
                raise
            raise fetch_error(exc, job, files, dest, report) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(dest.iterdir()):
            dest.rmdir()  # ours, and nothing came (nor a partial copy to resume)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    with contextlib.suppress(OSError):
        partial.rmdir()  # only when empty
    return report


def large_command(path: str, offset: int) -> str:
    """`path` from byte `offset` on, on stdout; its sha256 (the whole file, hashed there meanwhile)
    on stderr as `SHA256 DIGEST`. Exit MISSING_RC: no such file."""
    q = shlex.quote(path)
    return (
        f"{PICK_SHA256}[ -f {q} ] || exit {MISSING_RC}; "
        f"{{ $aif_sha256 < {q} | sed 's/^/SHA256 /' >&2; }} & tail -c +{int(offset) + 1} -- {q}; "
        'rc=$?; wait; exit "$rc"'
    )


def _key(job: Job, name: str) -> str:
    return hashlib.sha256(f"{job.site}\0{job.workdir}\0{name}".encode()).hexdigest()[:32]


def move_new_dirs(unpacked: Path, dest: Path, names: list[str]) -> set[str]:
    """Move each top-level dir of the unpacked small files that `dest` does not have yet into `dest`
    by one rename (10,000 files: one rename, not 10,000); returns the names it moved. A dir that
    `dest` has (or that appears meanwhile: the rename fails) is left to the caller, file by file."""
    tops: dict[str, list[str]] = {}
    for name in names:
        top, sep, _ = name.partition("/")
        if sep:
            tops.setdefault(top, []).append(name)
    moved: set[str] = set()
    for top, inside in tops.items():
        if os.path.lexists(dest / top):
            continue
        try:
            os.rename(unpacked / top, dest / top)
        except OSError:
            continue
        moved.update(inside)
    return moved


def fetch_large(
    transport: Bulk,
    job: Job,
    name: str,
    info: Listed,
    partial: Path,
    progress: Callable[[int], None],
    report: FetchReport,
) -> Path:
    """Append the rest of `name` to its partial copy and check it; the checked copy's path."""
    remote = f"{job.workdir}/{name}"
    key = _key(job, name)
    part, meta = partial / f"{key}.part", partial / f"{key}.json"
    want = {"site": job.site, "path": remote, "size": info.size, "mtime": info.mtime}
    offset = 0
    with contextlib.suppress(OSError, ValueError):
        if json.loads(meta.read_text()) == want and part.stat().st_size <= info.size:
            offset = part.stat().st_size
    if not offset:
        partial.mkdir(parents=True, exist_ok=True)
        part.unlink(missing_ok=True)
        meta.write_text(json.dumps(want))
    report.resumed += offset
    try:
        done = transport.run_to_file(large_command(remote, offset), part, append=True, digest=True, progress=progress)
    except BaseException:
        with contextlib.suppress(OSError):
            report.kept[name] = part.stat().st_size
        raise
    lines = done.stderr.splitlines()
    if done.rc == MISSING_RC:
        raise RemoteError(f"{name} is no longer in the job dir {job.workdir} on {job.site}", where=job.site)
    site = next((ln.split()[1] for ln in lines if ln.startswith("SHA256 ") and len(ln.split()) > 1), "")
    if done.rc != 0 or not re.fullmatch(r"[0-9a-f]{64}", site):
        report.kept[name] = part.stat().st_size
        err = " ".join(ln for ln in lines if not ln.startswith("SHA256 ")).strip()
        raise RemoteError(f"cannot read {name} in {job.workdir} on {job.site}: {err or f'exit {done.rc}'}")
    if done.sha256 != site:
        part.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"{name}: the copy's sha256 {done.sha256} is not the site's {site}; the copy was dropped",
            "the file may have changed on the site during the fetch: fetch it again once the job stopped writing it",
            where=job.site,
        )
    return part


def site_digests(transport: Transport, job: Job, names: list[str]) -> dict[str, str]:
    """The site's sha256 of each of `names` (one command, the names on its stdin)."""
    listing = "".join(f"./{n}\0" for n in names).encode()
    line = f"cd -- {shlex.quote(job.workdir or '.')} || exit 1; {PICK_SHA256}xargs -0 -r $aif_sha256"
    result = transport.run(line, stdin=listing)
    site: dict[str, str] = {}
    for ln in result.stdout.splitlines():
        m = _DIGEST.match(ln)
        if m:
            site[m.group(2).removeprefix("./")] = m.group(1)
    if not result.ok or len(site) < len(set(names)):
        missing = sorted(set(names) - set(site))[:3]
        raise RemoteError(
            f"cannot check the fetched files on {job.site} (no sha256 for {', '.join(missing) or '?'}): "
            f"{result.stderr.strip() or f'exit {result.rc}'}",
            where=job.site,
        )
    return site


def local_digests(unpacked: Path, names: list[str]) -> dict[str, str]:
    """The sha256 of each unpacked file (one that is not there is left out)."""
    out: dict[str, str] = {}
    for name in names:
        with contextlib.suppress(FileNotFoundError), open(unpacked / name, "rb") as fh:
            digest = hashlib.sha256()
            while block := fh.read(1 << 20):
                digest.update(block)
            out[name] = digest.hexdigest()
    return out


def check_small(job: Job, names: list[str], site: dict[str, str], here: dict[str, str]) -> None:
    """Each unpacked file's sha256 (`local_digests`) against the site's."""
    for name in names:
        if here.get(name) != site[name]:
            raise ChecksumMismatch(
                f"{name}: the copy's sha256 {here.get(name) or '(not in the archive)'} is not the site's "
                f"{site[name]}; nothing was written",
                "it may have changed on the site during the fetch: fetch it again once the job stopped writing it",
                where=job.site,
            )


class Unpacker:
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
            with open(self.fifo, "rb", buffering=1 << 18) as fh:
                with contextlib.suppress(OSError, AttributeError):  # Linux: a 1 MiB pipe, not 64 KiB
                    fcntl.fcntl(fh.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
                try:
                    extract_stream(TarReader(fh), self.into)
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


def extract_stream(tar: TarReader, into: Path) -> None:
    """Unpack a fetch's tar into the empty dir `into`: regular files (and dirs) only, under relative
    names without `..`, created new (O_EXCL, O_NOFOLLOW), mode 0644 or 0755 under the umask, with
    their mtime. Anything else (a link, a device, a name that climbs out) is a damaged archive: fetch
    asks only for regular files. As safe as tarfile's "data" filter for such archives; 10,000 files of
    10 kB: 1.2 s with tarfile (itself half the CPU of extractall), 0.9 s with
    `transport.tarstream.TarReader` (tmpfs; measured when each file was also hashed as it was written,
    which the stream's digest has since made unneeded)."""
    made: set[str] = set()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for member in tar:
        name = member.name
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if member.type == b"5" and parts and ".." not in parts and not name.startswith("/"):
            os.makedirs(os.path.join(into, *parts), exist_ok=True)
            continue
        if not member.regular or not parts or ".." in parts or name.startswith("/") or "\0" in name:
            raise tarfile.TarError(f"the archive holds {name!r}, which is not a plain file under the job dir")
        folder = os.path.join(into, *parts[:-1])
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        path = os.path.join(folder, parts[-1])
        fd = os.open(path, flags, 0o755 if member.mode & 0o100 else 0o644)
        try:
            for block in tar.data(member):
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.utime(path, (member.mtime, member.mtime))


def transfer_failure(exc: Exception) -> bool:
    """A failure of the transfer itself (the connection, the local disk, the archive), not a bug:
    paramiko's errors are matched by module, so that this layer does not import paramiko."""
    if isinstance(exc, (RemoteError, OSError, EOFError, tarfile.TarError)):
        return True
    return type(exc).__module__.split(".")[0] == "paramiko"


def fetch_error(exc: BaseException, job: Job, files: list[str], dest: Path, report: FetchReport) -> AifactoryError:
    """A failed fetch as an exit-3 error that says what was and was not transferred."""
    what = f"{len(files)} file(s) of job {job.id}" if len(files) != 1 else f"{files[0]} of job {job.id}"
    left = f"{report.received:,} bytes had arrived; nothing was written under its final name in {dest}"
    if report.kept:
        kept = ", ".join(f"{n} ({b:,} bytes)" for n, b in report.kept.items())
        left += f"; kept in {dest / PARTIAL} for the next fetch to resume: {kept}"
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        return LocalWriteError(
            f"cannot fetch {what}: {os.strerror(exc.errno or 0).lower()} while writing in {dest} ({left})",
            "free space there (or fetch into another --dest) and run the fetch again"
            + (f"; deleting {dest / PARTIAL} frees what the partial copies hold" if report.kept else ""),
        )
    if isinstance(exc, RemoteError):
        return RemoteError(f"fetch of {what} failed: {exc.message} ({left})", exc.hint, where=exc.where)
    if isinstance(exc, tarfile.TarError):
        return RemoteError(f"fetch of {what} failed: the archive from the site is damaged ({exc}; {left})")
    return RemoteError(f"fetch of {what} failed: {type(exc).__name__}: {exc} ({left})", "run the fetch again")
