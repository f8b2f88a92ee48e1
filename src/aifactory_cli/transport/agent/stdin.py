"""A `run` request's stdin, sent by the agent's client: the writer the command's stdin function
writes into becomes DATA frames (see protocol.py: the agent says `stdin-closed` when the remote
command stops reading)."""

from __future__ import annotations

import io
from typing import Any

from aifactory_cli.transport import Stdin, write_stdin
from aifactory_cli.transport.agent.protocol import ABORT, CHUNK, DATA, END, FrameConn, PeerGone, ProtocolError


class StdinFrames(io.RawIOBase):
    """The writer a command's stdin function writes into: DATA frames to the agent."""

    def __init__(self, conn: FrameConn) -> None:
        self.conn = conn
        self.broken = False  # the agent said the remote command stopped reading
        self.discard = False

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if self.discard:
            return len(view)
        for i in range(0, len(view), CHUNK):
            self._check_closed()
            self.conn.send_frame(DATA, view[i : i + CHUNK])
        return len(view)

    def _check_closed(self) -> None:
        if self.broken:
            raise BrokenPipeError("the remote command does not read its input any more")
        if self.conn.readable_now():
            msg = self.conn.recv_json()
            if msg.get("event") != "stdin-closed":
                raise ProtocolError(f"unexpected message while sending input: {msg}")
            self.broken = True
            raise BrokenPipeError("the remote command does not read its input any more")


def send_stdin(conn: FrameConn, stdin: Stdin) -> Exception | None:
    """Stream the command's input; returns the local writer's error (then the stream was aborted)."""
    raw = StdinFrames(conn)
    writer = io.BufferedWriter(raw, buffer_size=CHUNK)
    failure: Exception | None = None
    try:
        write_stdin(writer, stdin)
    except BrokenPipeError as exc:
        if not raw.broken:  # a local pipe, not the remote command
            failure = exc
    except (PeerGone, ProtocolError):
        raise
    except Exception as exc:
        failure = exc
    finally:
        raw.discard = True  # whatever is still buffered (after an error) goes nowhere
        writer.close()
    conn.send_frame(ABORT if failure is not None else END)
    return failure
