"""Bytes in and out of one command's SSH channel: output cut at the marker lines, input written
into the channel."""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import paramiko


def marked(line: str) -> tuple[str, str]:
    """A fresh marker and `line` behind it: the marker goes to stdout and stderr first, so `MarkerCut`
    drops what the login shell printed before the command ran."""
    mark = f"AIFACTORY-{secrets.token_hex(8)}"
    return mark, f"printf '%s\\n' {mark}; printf '%s\\n' {mark} >&2; {line}"


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
        view = memoryview(b).cast("B")
        if self.discard:
            return len(view)
        # one packet's worth per sendall: paramiko's sendall re-slices what is left after every
        # packet (32 KiB with OpenSSH), which copied a 256 KiB write 4 times over (14 % of an upload);
        # a packet carries at most its max size less 64 bytes (paramiko's `_wait_for_send_window`)
        step = max(int(getattr(self.channel, "out_max_packet_size", 0) or 0) - 64, 1 << 14)
        try:
            for i in range(0, len(view), step):
                self.channel.sendall(bytes(view[i : i + step]))
        except Exception as exc:
            # the remote command stopped reading, the channel closed (OSError), or the connection
            # died under it (paramiko: EOFError, SSHException): the channel's readers then say
            # which, as for any command, instead of this raw error
            if not isinstance(exc, (OSError, EOFError)) and not type(exc).__module__.startswith("paramiko"):
                raise
            self.broken = True
            raise BrokenPipeError(str(exc) or type(exc).__name__) from exc
        return len(view)
