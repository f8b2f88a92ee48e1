"""The agent's `tofile` request (`Transport.run_to_file` through the agent): the agent runs the
command and writes its stdout into the client's local file itself, so a fetch's bytes do not cross
the agent's socket a second time. The client is told the bytes written (`{"event": "bytes", "n": N}`,
at most one frame per EVENT_BYTES), then gets the reply: `rc`, `stderr`, `written`, `sha256`.

A local write failure (a full disk, the FIFO's reader gone: EPIPE) comes back as `LocalOSError` with
its errno, which the client raises as the same OSError: it is this machine's failure, not the site's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from aifactory_cli.errors import RemoteError
from aifactory_cli.transport import LocalFile
from aifactory_cli.transport.agent.protocol import FrameConn, PeerGone, ProtocolError
from aifactory_cli.transport.tarstream import LocalTar
from aifactory_cli.transport.tofile import FileSink

if TYPE_CHECKING:
    from aifactory_cli.transport.agent.server import AgentServer

EVENT_BYTES = 1 << 20


class _Counts:
    """Byte counts to the client, as `{"event": "bytes", "n": N}` frames of at least EVENT_BYTES."""

    def __init__(self, conn: FrameConn) -> None:
        self.conn, self.pending = conn, 0

    def __call__(self, n: int) -> None:
        self.pending += n
        if self.pending >= EVENT_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.conn.send_json({"event": "bytes", "n": self.pending})
            self.pending = 0


def local_file(conn: FrameConn, given: dict[str, Any]) -> Callable[[BinaryIO], None]:
    """A `run` request's `stdin_file` (the client's `LocalFile`): the agent reads the client's file
    from `offset` on; the client hears the bytes sent, as events, before the reply."""
    path = Path(str(given.get("path") or ""))
    if not path.is_absolute():
        raise RemoteError(f"the agent reads only absolute paths, not {str(path)!r}")
    counts = _Counts(conn)
    file = LocalFile(path, int(given.get("offset") or 0), counts)

    def read(sink: BinaryIO) -> None:
        file(sink)
        counts.flush()

    return read


def local_tar(conn: FrameConn, listing: bytes) -> tuple[Callable[[BinaryIO], None], LocalTar]:
    """A `run` request's `stdin_tar` (the client's `LocalTar`, its listing): the agent reads the files
    and writes the tar; the client hears the file bytes sent, as events, before the reply, and the
    reply carries the tar's `sha256` and `changed` (`stdin_sha256`, `stdin_changed`)."""
    counts = _Counts(conn)
    tar = LocalTar(listing, counts)
    try:
        tar.check()
    except ValueError as exc:
        raise RemoteError(f"the agent got a damaged tar listing: {exc}") from None

    def read(sink: BinaryIO) -> None:
        tar(sink)
        counts.flush()

    return read, tar


def serve_tofile(server: AgentServer, conn: FrameConn, req: dict[str, Any]) -> None:
    progress = _Counts(conn)

    path = Path(str(req.get("path") or ""))
    try:
        if not path.is_absolute():
            raise RemoteError(f"the agent writes only to absolute paths, not {str(path)!r}")
        with FileSink(path, append=bool(req.get("append")), digest=bool(req.get("digest")), progress=progress) as sink:
            given = req.get("stdin")
            stdin = str(given).encode("latin-1") if given is not None else None
            rc, err = server.ops.stream(str(req.get("command", "")), sink, stdin)
    except (PeerGone, ProtocolError):
        raise
    except OSError as exc:
        error = {"type": "LocalOSError", "errno": exc.errno, "strerror": exc.strerror, "filename": exc.filename}
        conn.send_json({"ok": False, "opened": server.ops.take_opened(), "error": error, "agent_exiting": False})
        return
    except Exception as exc:
        conn.send_json(server._error_reply(exc))
        return
    progress.flush()
    done = sink.result(rc, err)
    conn.send_json(server._ok(rc=done.rc, stderr=done.stderr, written=done.written, sha256=done.sha256))
