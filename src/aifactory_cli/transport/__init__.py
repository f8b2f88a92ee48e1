"""Transports run commands and move files on a site: `local` (this machine), `ssh` (paramiko, in
this process) and the connection agent's client (`agent/`, the same SSH connection kept by a
background process). The contract suite (tests/real/test_transport_contract.py) runs over all three.

Remote commands are always built from argument lists (`shlex.join`) or joined with `and_then`,
never by pasting user strings into a shell line.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from aifactory_cli.transport.tofile import ToFile


@dataclass
class CommandResult:
    rc: int
    stdout: str
    stderr: str
    # bytes the site's login shell printed before the command's output (a banner, a chatty
    # ~/.bashrc), cut off by the output markers; always 0 where there is no login shell
    noise_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.rc == 0


Command = str | Sequence[str]
Progress = Callable[[int], None]


@dataclass
class LocalFile:
    """A command's stdin read from a local file, from `offset` on (a large file's upload). Over the
    connection agent, the agent reads the file itself: the bytes do not cross its socket first."""

    path: Path
    offset: int = 0
    progress: Progress | None = None

    def __call__(self, sink: BinaryIO) -> None:
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            while block := fh.read(1 << 20):
                sink.write(block)
                if self.progress:
                    self.progress(len(block))


# What a command reads on stdin: bytes, a function that streams into a binary writer (used for
# tar streams of uploads, so big uploads never sit in memory), or a local file (`LocalFile`, a
# function too).
Stdin = bytes | Callable[[BinaryIO], None] | None


def write_stdin(writer: BinaryIO, stdin: Stdin) -> None:
    """Write a command's input into `writer` (bytes, or a callable that writes), then flush it."""
    if callable(stdin):
        stdin(writer)
    elif stdin is not None:
        writer.write(stdin)
    writer.flush()


def to_shell(command: Command) -> str:
    """A shell line from an argv list (each word quoted) or an already-built line."""
    return command if isinstance(command, str) else shlex.join(command)


def and_then(*commands: Command) -> str:
    """`a && b && c`, each part quoted from its argv."""
    return " && ".join(to_shell(c) for c in commands)


class Tunnel(Protocol):
    """A byte stream to a host:port as the site sees it (`Transport.open_tunnel`): a direct-tcpip
    channel of the SSH connection, a stream through the connection agent, or a local socket.
    `transport/relay.py` pumps bytes between it and a local socket."""

    def fileno(self) -> int: ...

    def recv(self, size: int) -> bytes: ...

    def sendall(self, data: bytes) -> None: ...

    def shutdown_write(self) -> None:
        """No more bytes from us (the other side still sends)."""

    def close(self) -> None: ...


class Bulk(Protocol):
    """What a bulk transfer (a large data file, a large fetched file) uses: a `Transport`, or the
    OpenSSH fast path through the user's ControlMaster (`ssh/mux.py: bulk_transport`)."""

    def run(self, command: Command, *, stdin: Stdin = None, timeout: float | None = None) -> CommandResult: ...

    def run_to_file(
        self,
        command: Command,
        local: Path,
        *,
        append: bool = False,
        digest: bool = False,
        stdin: bytes | None = None,
        progress: Progress | None = None,
    ) -> ToFile: ...


class Transport(Protocol):
    """What the backends and services use of a site's transport; nothing else is reached for."""

    name: str

    @property
    def username(self) -> str:
        """The user commands run as on the site (the login user over SSH)."""
        ...

    def connect(self) -> None:
        """Log in now if not logged in yet (a no-op where there is nothing to log in to). An error
        here means nothing was sent to the site."""

    def run(self, command: Command, *, stdin: Stdin = None, timeout: float | None = None) -> CommandResult:
        """Run a shell command line on the site; stdout/stderr are returned whole."""
        ...

    def read_bytes(self, path: str, offset: int = 0) -> bytes:
        """The file's content from `offset` on; missing file -> FileNotFoundError."""
        ...

    def get_tar(
        self, workdir: str, files: list[str], local_archive: Path, progress: Progress | None = None
    ) -> bool | None:
        """Pack `files` (relative to `workdir`) on the site into a tar at `local_archive`, written
        front to back once (it is a FIFO that `fetch` unpacks as it arrives: no seek, no reopen);
        `progress` gets the byte counts as they arrive. True: the site hashed the stream as tar
        wrote it whole, and that is the digest of what arrived (else `fetch` checks each file)."""

    def run_to_file(
        self,
        command: Command,
        local: Path,
        *,
        append: bool = False,
        digest: bool = False,
        stdin: bytes | None = None,
        progress: Progress | None = None,
    ) -> ToFile:
        """Run a shell command line on the site, its stdout written into the local file `local`
        (appended, or from empty), front to back once (it may be a FIFO); with `digest`, the result
        carries the sha256 of the whole file, what was there before included (`tofile.py`). Over the
        agent, the agent writes the file. A local write failure raises its OSError."""
        ...

    def open_tunnel(self, host: str, port: int) -> Tunnel:
        """A byte stream to `host:port` as the site's login node reaches it, over the existing
        connection (no new login); `TunnelRefused` when the login node cannot connect there."""
        ...

    def close(self) -> None: ...
