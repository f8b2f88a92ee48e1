"""The stdin side of a command through an OpenSSH master (`mux.OpenSshMux`): a local file handed to
`ssh` as its stdin (no byte of it through Python) and its progress, or bytes and streams written into
ssh's pipe."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import subprocess
from typing import Any

from aifactory_cli.transport import LocalFile, Stdin, write_stdin

PIPE_SIZE = 1 << 20  # Linux pipes of 1 MiB, not 64 KiB: fewer wake-ups per byte


class _PipeWriter(io.RawIOBase):
    """ssh's stdin; remembers whether it was this pipe that broke (not a pipe of the stdin's own)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.broken = False

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        try:
            return os.write(self.fd, b)
        except BrokenPipeError:
            self.broken = True
            raise


class FileProgress:
    """The progress of ssh reading a local file as its stdin: the file's offset, which ssh's reads
    move in the open file description this process shares with it, looked at every 0.1 s."""

    EVERY = 0.1

    def __init__(self, fh: Any, given: LocalFile) -> None:
        self.fd, self.progress = fh.fileno(), given.progress
        self.done = given.offset

    def report(self) -> None:
        if self.progress is None:
            return
        with contextlib.suppress(OSError):
            now = os.lseek(self.fd, 0, os.SEEK_CUR)
            if now > self.done:
                self.progress(now - self.done)
                self.done = now

    def watch(self, proc: subprocess.Popen[bytes]) -> None:
        """Until ssh ends (it has read the whole file, or failed)."""
        while True:
            try:
                proc.wait(self.EVERY)
                return
            except subprocess.TimeoutExpired:
                self.report()


def grow_pipe(fd: int) -> None:
    """A Linux pipe of 1 MiB, not 64 KiB: fewer wake-ups per byte."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)


def feed_pipe(proc: subprocess.Popen[bytes], stdin: Stdin, buffer: int) -> None:
    """Write `stdin` (bytes, or a callable that writes) into ssh's stdin pipe, then close it."""
    if proc.stdin is None:
        return
    grow_pipe(proc.stdin.fileno())
    raw = _PipeWriter(proc.stdin.fileno())
    writer = io.BufferedWriter(raw, buffer_size=buffer)
    try:
        write_stdin(writer, stdin)
    except BrokenPipeError:  # ssh (or the command) stopped reading: its exit status says why
        if not raw.broken:
            raise
    finally:
        with contextlib.suppress(OSError):
            writer.close()  # flushes what is left; a broken pipe then is ssh's exit status's to tell
        with contextlib.suppress(OSError):
            proc.stdin.close()
