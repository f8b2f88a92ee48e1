"""A command's output written straight into a local file (`Transport.run_to_file`): a fetch's tar
stream into the FIFO that unpacks it, a large file appended to its partial copy. Over the connection
agent, the agent itself writes the file, so the bytes do not cross the agent's socket a second time.

`FileSink` is the writer all transports share: it appends or truncates, counts, reports progress,
and (`digest`) keeps the sha256 of the whole file, the bytes that were there before included, so a
resumed copy is checked end to end."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aifactory_cli.errors import RemoteError

from . import Progress

READ = 1 << 20

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
# The site's sha256 tool, picked once per command: OpenSSL's where it works (it uses the CPU's SHA
# instructions: 1 GiB in 0.99 s on the bed, against 4.8 s for sha256sum as Debian builds coreutils, without
# them), else `sha256sum`. Both print `DIGEST NAME` (openssl `-r`: `DIGEST *NAME`).
# OpenSSL is checked on the empty input first, so a broken or restricted openssl falls back.
PICK_SHA256 = (
    "if command -v openssl >/dev/null 2>&1 && "
    f'[ "$(openssl dgst -sha256 -r </dev/null 2>/dev/null | cut -c1-64)" = {EMPTY_SHA256} ]; '
    "then aif_sha256='openssl dgst -sha256 -r'; else aif_sha256='sha256sum --'; fi; "
)


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
    """Pack the files named on stdin (`tar_names`) into a tar on stdout, in `workdir`, hashing the
    stream as it goes out (`tee` into the site's sha256 tool): at the end, on stderr,
    `AIF-TAR rc=TAR'S-EXIT-STATUS DIGEST` (`check_tar` reads it)."""
    return (
        f"cd -- {shlex.quote(workdir)} || exit 1; {PICK_SHA256}exec 4>&1 && "
        # fd 4 is the command's stdout (the stream); tar's status and the digest come out of $( )
        'r=$( { { tar -c -f - --null -T - 5>&-; echo "rc=$?" >&5; } | '
        "tee /dev/fd/4 | $aif_sha256 | cut -c1-64 >&5; } 5>&1 ) && "
        'echo "AIF-TAR" $r >&2'
    )


def tar_names(files: list[str]) -> bytes:
    """`tar_command`'s stdin: NUL-separated (GNU tar reads such a list verbatim: a name that starts
    with `-` is no option). On stdin, not on the command line: the kernel takes at most 128 KiB
    for the one argument that sshd's `bash -c` gets, about 4,000 names."""
    return b"".join(os.fsencode(f) + b"\0" for f in files)


_STATUS = re.compile(r"^AIF-TAR(?: rc=(\d+)| ([0-9a-f]{64}))+\s*$", re.M)


def check_tar(done: ToFile, workdir: str, site: str) -> bool:
    """Whether the stream that arrived (`done.sha256`, with `run_to_file(digest=True)`) is the one
    the site's tar wrote whole (its digest there, tar's exit status 0). False: not known (a tar that
    said a file changed as it read it, a site without the status line): the caller checks each file.
    A tar that failed is a RemoteError."""
    found = list(_STATUS.finditer(done.stderr))
    status = found[-1].group(0) if found else ""
    rc = re.search(r"rc=(\d+)", status)
    digest = re.search(r"[0-9a-f]{64}", status)
    tar_rc = int(rc.group(1)) if rc else done.rc
    # 1 from tar itself: a file changed while it read it (the check of each file names it); without
    # the status line the command failed before tar ended (cd), or the site's shell gave none
    if tar_rc != 0 and (rc is None or tar_rc != 1):
        err = _STATUS.sub("", done.stderr).strip()
        raise RemoteError(
            f"cannot pack files in {workdir} on {site}: {err or f'tar exited with {tar_rc}'}",
            where=site,
        )
    return tar_rc == 0 and digest is not None and digest.group(0) == done.sha256
