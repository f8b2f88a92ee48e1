"""A command's output written straight into a local file (`Transport.run_to_file`): a fetch's tar
stream into the FIFO that unpacks it, a large file appended to its partial copy. Over the connection
agent, the agent itself writes the file, so the bytes do not cross the agent's socket a second time.

`FileSink` is the writer all transports share: it appends or truncates, counts, reports progress,
and (`digest`) keeps the sha256 of the whole file, the bytes that were there before included, so a
resumed copy is checked end to end."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aifactory_cli.errors import RemoteError

from . import Progress, and_then

READ = 1 << 20


@dataclass
class ToFile:
    """How `run_to_file` ended: the command's exit status and stderr, the bytes written by this run,
    and the sha256 of the whole local file (with `digest`)."""

    rc: int
    stderr: str
    written: int
    sha256: str | None = None


class FileSink:
    """Opened with `with`: a callable that writes each chunk into `local` (appended, or from empty)."""

    def __init__(self, local: Path, *, append: bool, digest: bool, progress: Progress | None = None) -> None:
        self.local, self.append, self.progress = local, append, progress
        self.hash = hashlib.sha256() if digest else None
        self.written = 0
        self._fh: BinaryIO | None = None

    def __enter__(self) -> FileSink:
        self.local.parent.mkdir(parents=True, exist_ok=True)
        if self.hash is not None and self.append and self.local.exists():
            with open(self.local, "rb") as old:  # what an earlier, cut run wrote
                while chunk := old.read(READ):
                    self.hash.update(chunk)
        self._fh = open(self.local, "ab" if self.append else "wb")
        return self

    def __call__(self, data: bytes) -> None:
        assert self._fh is not None
        self._fh.write(data)
        if self.hash is not None:
            self.hash.update(data)
        self.written += len(data)
        if self.progress is not None:
            self.progress(len(data))

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()

    def result(self, rc: int, stderr: bytes | str) -> ToFile:
        err = stderr if isinstance(stderr, str) else stderr.decode(errors="replace")
        return ToFile(rc, err, self.written, self.hash.hexdigest() if self.hash is not None else None)


def tar_command(workdir: str) -> str:
    """Pack the files named on stdin (`tar_names`) into a tar on stdout, in `workdir`."""
    return and_then(["cd", workdir], ["tar", "-c", "-f", "-", "--null", "-T", "-"])


def tar_names(files: list[str]) -> bytes:
    """`tar_command`'s stdin: NUL-separated (GNU tar reads such a list verbatim: a name that starts
    with `-` is no option). On stdin, not on the command line: the kernel takes at most 128 KiB
    for the one argument that sshd's `bash -c` gets, about 4,000 names."""
    return b"".join(os.fsencode(f) + b"\0" for f in files)


def check_tar(done: ToFile, workdir: str, site: str) -> None:
    if done.rc != 0:
        raise RemoteError(
            f"cannot pack files in {workdir} on {site}: {done.stderr.strip() or f'tar exited with {done.rc}'}",
            where=site,
        )
