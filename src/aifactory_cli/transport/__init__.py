"""Transports run commands and move files on a site: `local` (this machine) and `ssh` (paramiko).

Remote commands are always built from argument lists (`shlex.join`) or joined with `and_then`,
never by pasting user strings into a shell line.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


@dataclass
class CommandResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


Command = str | Sequence[str]
Progress = Callable[[int], None]
# What a command reads on stdin: bytes, or a function that streams into a binary writer
# (used for tar streams of uploads, so big uploads never sit in memory).
Stdin = bytes | Callable[[BinaryIO], None] | None


def to_shell(command: Command) -> str:
    """A shell line from an argv list (each word quoted) or an already-built line."""
    return command if isinstance(command, str) else shlex.join(command)


def and_then(*commands: Command) -> str:
    """`a && b && c`, each part quoted from its argv."""
    return " && ".join(to_shell(c) for c in commands)


class Transport(Protocol):
    name: str

    def run(self, command: Command, *, stdin: Stdin = None, timeout: float | None = None) -> CommandResult:
        """Run a shell command line on the site; stdout/stderr are returned whole."""

    def put_bytes(self, data: bytes, path: str, mode: int = 0o600) -> None:
        """Write a file on the site (atomically where possible)."""

    def get_file(self, path: str, local: Path, progress: Progress | None = None) -> None:
        """Copy a file from the site to `local`."""

    def read_bytes(self, path: str, offset: int = 0) -> bytes:
        """The file's content from `offset` on; missing file -> FileNotFoundError."""

    def close(self) -> None: ...
