"""Bytes in and out of one command's SSH channel: output cut at the marker lines, input written
into the channel; a file read over SFTP, chunk by chunk."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import paramiko

    from aifactory_cli.transport.ssh.connection import SshTransport

READ_CHUNK = 256 * 1024  # one read from an SFTP file


class MarkerCut:
    """Drops everything up to and including the first `marker\\n`, then passes data to `sink`.

    `noise_bytes` counts what was dropped before the marker: what the login shell's start-up files
    (a banner, a chatty ~/.bashrc) printed before the command ran."""

    LIMIT = 1024 * 1024

    def __init__(self, marker: bytes, sink: Callable[[bytes], object]) -> None:
        self.marker = marker + b"\n"
        self.sink = sink
        self.buffer = b""
        self.found = False
        self.gave_up = False
        self.noise_bytes = 0

    def feed(self, data: bytes) -> None:
        if self.found or self.gave_up:
            self.sink(data)
            return
        self.buffer += data
        i = self.buffer.find(self.marker)
        if i >= 0:
            self.found = True
            self.noise_bytes = i
            rest, self.buffer = self.buffer[i + len(self.marker) :], b""
            if rest:
                self.sink(rest)
        elif len(self.buffer) > self.LIMIT:
            self.finish()

    def finish(self) -> None:
        """No marker came (the shell failed before printing it): pass the output on unchanged."""
        if not self.found and not self.gave_up:
            self.gave_up = True
            if self.buffer:
                self.sink(self.buffer)
            self.buffer = b""


class ChannelWriter(io.RawIOBase):
    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel
        self.broken = False
        self.discard = False

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        if self.discard:
            return len(data)
        try:
            self.channel.sendall(data)
        except OSError as exc:  # the remote command stopped reading / the channel closed
            self.broken = True
            raise BrokenPipeError(str(exc)) from exc
        return len(data)


class RemoteReader:
    """A file being read over SFTP, chunk by chunk (each chunk under the transport's SFTP lock)."""

    def __init__(self, ssh: SshTransport, fh: Any, path: str, empty: bool) -> None:
        self.ssh, self.fh, self.path, self.empty = ssh, fh, path, empty

    def __iter__(self) -> Iterator[bytes]:
        if self.empty:
            return
        while True:
            with self.ssh._sftp_lock:
                try:
                    data = self.fh.read(READ_CHUNK)
                except Exception as exc:
                    raise self.ssh.sftp_error(exc, "read", self.path) from exc
            if not data:
                return
            yield data

    def close(self) -> None:
        with self.ssh._sftp_lock, contextlib.suppress(Exception):
            self.fh.close()


def remote_path(path: str) -> str:
    """SFTP paths are relative to the home directory; `~/x` and `$HOME/x` mean the same there."""
    for prefix in ("~/", "$HOME/", "${HOME}/"):
        if path.startswith(prefix):
            return path[len(prefix) :] or "."
    return "." if path in ("~", "$HOME", "${HOME}") else path
