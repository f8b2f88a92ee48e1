"""An interactive session over the site's paramiko connection: one command on its own channel, with
or without a pseudo-terminal (see `transport.interactive`)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from aifactory_cli.errors import RemoteError
from aifactory_cli.transport.interactive import ERR, EXIT, OUT, Event, PtyRequest
from aifactory_cli.transport.ssh.streams import MarkerCut, marked

if TYPE_CHECKING:
    import paramiko

    from aifactory_cli.transport.ssh.connection import SshTransport

CHUNK = 64 * 1024


def session_refused(address: str, site: str, exc: Exception) -> RemoteError:
    """The login node is up but refuses one more channel on the connection: most often its sshd's
    MaxSessions (10 by default), reached by shells and commands open at once. The connection is kept:
    reconnecting would cost a login (an MFA prompt) and end the sessions still open on it."""
    return RemoteError(
        f"{address} refused one more session on the connection: {getattr(exc, 'text', exc)}",
        "the login node's sshd limits sessions per connection (MaxSessions, 10 by default): "
        "end an `aifactory shell` or `exec` that is still open, then try again",
        where=site,
    )


class SshSession:
    """A command on a channel of `ssh`'s connection. Without a pty, stdout and stderr each start
    after a marker line, as `SshTransport.run` does, so that what a chatty login shell prints is
    not taken for the command's output; on a pty the terminal shows whatever comes."""

    def __init__(self, ssh: SshTransport, channel: paramiko.Channel, line: str, pty: PtyRequest | None) -> None:
        self.ssh = ssh
        self.line = line
        self.channel = channel
        self._out: list[Event] = []
        self._done = False
        try:
            if pty is not None:
                self.channel.get_pty(term=pty.term, width=pty.cols, height=pty.rows)
                self._cuts = None
                self.channel.exec_command(line)
            else:
                mark, wrapped = marked(line)
                self._cuts = (
                    MarkerCut(mark.encode(), lambda b: self._out.append((OUT, b))),
                    MarkerCut(mark.encode(), lambda b: self._out.append((ERR, b))),
                )
                self.channel.exec_command(wrapped)
        except Exception as exc:
            self.channel.close()
            raise RemoteError(
                f"cannot start a session on {ssh.site}: {type(exc).__name__}: {exc}", where=ssh.site
            ) from exc

    def fileno(self) -> int:
        return int(self.channel.fileno())

    def _take(self, data: bytes, index: int) -> None:
        if self._cuts is None:
            self._out.append((OUT if index == 0 else ERR, data))
        else:
            self._cuts[index].feed(data)

    def events(self) -> list[Event]:
        if self._done:
            return []
        channel = self.channel
        while channel.recv_ready():
            self._take(channel.recv(CHUNK), 0)
        while channel.recv_stderr_ready():
            self._take(channel.recv_stderr(CHUNK), 1)
        finished = (channel.eof_received and channel.exit_status_ready()) or channel.closed
        if finished and not channel.recv_ready() and not channel.recv_stderr_ready():
            if self._cuts is not None:
                for cut in self._cuts:
                    cut.finish()
            self._done = True
            if not channel.exit_status_ready():
                raise RemoteError(
                    f"the connection to {self.ssh.site} was lost while the command ran; its outcome is unknown",
                    "check on the site whether it took effect; the next command reconnects",
                    where=self.ssh.site,
                )
            status = channel.recv_exit_status()
            self._out.append((EXIT, 255 if status < 0 else status))  # killed by a signal: 255, like OpenSSH
        events, self._out = self._out, []
        return events

    def send(self, data: bytes) -> None:
        with contextlib.suppress(OSError, EOFError):
            self.channel.sendall(data)

    def send_eof(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self.channel.shutdown_write()

    def resize(self, cols: int, rows: int) -> None:
        with contextlib.suppress(Exception):
            self.channel.resize_pty(width=cols, height=rows)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.channel.close()
