"""Interactive sessions on a site: one command on its own SSH channel, its output streamed as it comes,
its input fed from this side, optionally on a pseudo-terminal (`aifactory shell`, `aifactory exec`).

- `Session`: what the SSH transport (`ssh/session.py`, a paramiko channel) and the connection
  agent's client (`agent/session.py`, the same channel opened by the agent) give back.
- `relay`: the loop between a session and this process's stdin, stdout and stderr, one thread,
  `select` on the session, stdin and a self-pipe woken by SIGWINCH (the new window size is sent).
- `raw_terminal`: the local terminal in raw mode while a pty session runs (restored on exit, also
  on errors and Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

OUT, ERR, EXIT = "out", "err", "exit"
Event = tuple[str, bytes | int]  # (OUT | ERR, data) or (EXIT, exit status)


@dataclass
class PtyRequest:
    """The remote pseudo-terminal: the terminal type and the window size (columns x rows)."""

    term: str = "xterm"
    cols: int = 80
    rows: int = 24


class Session(Protocol):
    def fileno(self) -> int:
        """Readable when events may be waiting (select on it, then call `events`)."""
        ...

    def events(self) -> list[Event]:
        """What has arrived, without blocking: output chunks, then (EXIT, status) once, at the end."""
        ...

    def send(self, data: bytes) -> None:
        """Bytes for the command's stdin (the terminal's input on a pty)."""

    def send_eof(self) -> None: ...

    def resize(self, cols: int, rows: int) -> None: ...

    def close(self) -> None: ...


def window_size(fd: int) -> tuple[int, int]:
    """(columns, rows) of the terminal on `fd` (80x24 when it has none)."""
    try:
        size = os.get_terminal_size(fd)
        return size.columns or 80, size.lines or 24
    except OSError:
        return 80, 24


def pty_request(fd: int) -> PtyRequest:
    cols, rows = window_size(fd)
    return PtyRequest(term=os.environ.get("TERM") or "xterm", cols=cols, rows=rows)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The terminal on `fd` in raw mode (every key goes to the remote pty as typed, Ctrl-C too);
    its settings are restored however the block ends."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def relay(
    session: Session,
    *,
    stdout: Callable[[bytes], object],
    stderr: Callable[[bytes], object],
    stdin_fd: int | None = None,
    winch_fd: int | None = None,
    poll: float = 0.2,
) -> int:
    """Run `session` to its end: its output to `stdout`/`stderr`, `stdin_fd` (if any) to its input
    (EOF is passed on), and the window size of `winch_fd`'s terminal on every SIGWINCH. Returns the
    command's exit status."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    previous = None
    if winch_fd is not None and hasattr(signal, "SIGWINCH"):

        def on_winch(signum: int, frame: object) -> None:
            with contextlib.suppress(OSError):
                os.write(wake_w, b"w")

        with contextlib.suppress(ValueError):  # not the main thread: no resizes
            previous = signal.signal(signal.SIGWINCH, on_winch)
    try:
        while True:
            watched = [session.fileno(), wake_r, *([stdin_fd] if stdin_fd is not None else [])]
            try:
                ready, _, _ = select.select(watched, [], [], poll)
            except InterruptedError:
                ready = []
            if wake_r in ready:
                os.read(wake_r, 1024)
                if winch_fd is not None:
                    session.resize(*window_size(winch_fd))
            if stdin_fd is not None and stdin_fd in ready:
                data = os.read(stdin_fd, 64 * 1024)
                if data:
                    session.send(data)
                else:
                    session.send_eof()
                    stdin_fd = None
            for kind, value in session.events():
                if isinstance(value, int):
                    return value  # (EXIT, status): the end
                (stdout if kind == OUT else stderr)(value)
    finally:
        if previous is not None:
            signal.signal(signal.SIGWINCH, previous)
        os.close(wake_r)
        os.close(wake_w)
