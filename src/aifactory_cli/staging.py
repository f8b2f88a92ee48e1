"""Files going to and coming from a job dir: uploads as one tar stream (one round trip for any
number of files), downloads by glob, with progress."""

from __future__ import annotations

import fnmatch
import io
import os
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from aifactory_cli.errors import SpecError


@dataclass
class UploadPlan:
    """Files for a job dir: generated ones (script, metadata) and the spec's `upload:` entries."""

    generated: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # name -> (data, mode)
    files: list[tuple[Path, str]] = field(default_factory=list)  # (local path, path in job dir)

    @property
    def total_bytes(self) -> int:
        return sum(len(d) for d, _ in self.generated.values()) + sum(p.stat().st_size for p, _ in self.files)

    def add_generated(self, name: str, data: bytes, mode: int = 0o600) -> None:
        self.generated[name] = (data, mode)


def collect_uploads(entries: list[str], base: Path) -> list[tuple[Path, str]]:
    """Expand the spec's `upload:` entries (files, directories, globs) relative to `base`."""
    out: list[tuple[Path, str]] = []
    seen: set[str] = set()
    for entry in entries:
        matches = sorted(base.glob(entry)) if any(c in entry for c in "*?[") else [base / entry]
        if not matches or not matches[0].exists():
            raise SpecError(
                f"upload entry '{entry}' does not exist (looked in {base})",
                "upload paths are relative to the spec file's directory",
            )
        for path in matches:
            if path.is_dir():
                for root, dirs, files in os.walk(path):
                    dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", ".git"))
                    for name in sorted(files):
                        full = Path(root) / name
                        rel = full.relative_to(base).as_posix()
                        if rel not in seen:
                            seen.add(rel)
                            out.append((full, rel))
            else:
                rel = path.relative_to(base).as_posix()
                if rel not in seen:
                    seen.add(rel)
                    out.append((path, rel))
    return out


class _CountingWriter(io.RawIOBase):
    def __init__(self, sink: BinaryIO, progress: Callable[[int], None] | None) -> None:
        self.sink = sink
        self.progress = progress

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.sink.write(b)
        if self.progress:
            self.progress(len(b))
        return len(b)


def tar_writer(plan: UploadPlan, progress: Callable[[int], None] | None = None) -> Callable[[BinaryIO], None]:
    """A function that streams the plan as an uncompressed tar into a binary writer."""

    def write(sink: BinaryIO) -> None:
        raw = _CountingWriter(sink, progress)
        buffered = io.BufferedWriter(raw, buffer_size=256 * 1024)  # type: ignore[type-var]
        with tarfile.open(fileobj=buffered, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for name, (data, mode) in plan.generated.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = mode
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(data))
            for path, rel in plan.files:
                info = tar.gettarinfo(str(path), arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
        buffered.flush()

    return write


def match_downloads(files: list[str], patterns: list[str]) -> list[str]:
    """Job-dir-relative `files` matching any of the spec's `download:` globs (`**` spans dirs)."""
    out = []
    for f in files:
        for pat in patterns:
            if _glob_match(f, pat):
                out.append(f)
                break
    return out


def _glob_match(path: str, pattern: str) -> bool:
    if pattern.endswith("/**"):
        prefix = pattern[:-3]
        if path.startswith(prefix + "/") and "*" not in prefix:
            return True
    if "**" in pattern:
        import re

        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            else:
                c = pattern[i]
                regex += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
                i += 1
        return re.fullmatch(regex, path) is not None
    return fnmatch.fnmatchcase(path, pattern) and path.count("/") == pattern.count("/")
