"""Interactive sessions through the connection agent (`aifactory exec`, `aifactory shell`): the agent
opens the channel on the connection it keeps (no second login, no second MFA prompt) and relays it
over the client's socket until the command ends.

The `session` request: `{"op": "session", "command": LINE, "pty": {"term", "cols", "rows"} | null}`;
the agent answers `{"ok": true}` once the command has started (or the error). Then, both ways at once:
- agent -> client: DATA frames whose first byte says the stream (1 stdout, 2 stderr), and at the
  end one JSON `{"exit": STATUS}` (or `{"error": {...}}` when the connection was lost);
- client -> agent: DATA frames (the command's input), END (its EOF), JSON `{"resize": [cols, rows]}`,
  and JSON `{"close": true}` when the client is done (after the exit, or to stop the command).
The socket connection then closes: it is not reused for other requests.

Standard library only on the client side (no paramiko).
"""

from __future__ import annotations

import contextlib
import json
import select
import threading
from typing import TYPE_CHECKING, Any

from aifactory_cli.transport.agent.protocol import (
    ABORT,
    DATA,
    END,
    JSON,
    FrameConn,
    PeerGone,
    ProtocolError,
    error_from_json,
    error_to_json,
)
from aifactory_cli.transport.interactive import ERR, EXIT, OUT, Event, PtyRequest, Session

if TYPE_CHECKING:
    from aifactory_cli.transport.agent.server import AgentServer

STDOUT, STDERR = b"\x01", b"\x02"


# --- the client side --------------------------------------------------------------------------------


class AgentSession:
    """A session the agent relays (the client side of the `session` request)."""

    def __init__(self, conn: FrameConn, site: str) -> None:
        self.conn = conn
        self.site = site
        self._done = False

    def fileno(self) -> int:
        return self.conn.fileno()

    def events(self) -> list[Event]:
        out: list[Event] = []
        while not self._done and self.conn.readable_now():
            try:
                kind, payload = self.conn.recv_frame()
            except (PeerGone, ProtocolError) as exc:
                self._done = True
                from aifactory_cli.errors import RemoteError

                raise RemoteError(
                    f"the connection agent for {self.site} went away while the command ran ({exc}); "
                    "its outcome is unknown",
                    where=self.site,
                ) from exc
            if kind == DATA and payload:
                out.append((OUT if payload[:1] == STDOUT else ERR, payload[1:]))
            elif kind == JSON:
                msg = json.loads(payload)
                self._done = True
                if "exit" in msg:
                    out.append((EXIT, int(msg["exit"])))
                else:
                    raise error_from_json(msg.get("error"), self.site)
        return out

    def _send(self, kind: int, payload: bytes = b"") -> None:
        with contextlib.suppress(PeerGone):
            self.conn.send_frame(kind, payload)

    def send(self, data: bytes) -> None:
        self._send(DATA, data)

    def send_eof(self) -> None:
        self._send(END)

    def resize(self, cols: int, rows: int) -> None:
        self._send(JSON, json.dumps({"resize": [cols, rows]}).encode())

    def close(self) -> None:
        self._send(JSON, b'{"close":true}')
        self.conn.close()


def open_session(conn: FrameConn, line: str, pty: PtyRequest | None) -> dict[str, Any]:
    """Send the `session` request; returns the agent's first reply (the caller checks it)."""
    request = {"op": "session", "command": line, "pty": vars(pty) if pty is not None else None}
    conn.send_json(request)
    return conn.recv_json()


# --- the agent side -----------------------------------------------------------------------------------


def serve_session(server: AgentServer, conn: FrameConn, req: dict[str, Any]) -> None:
    """Open the session on the agent's connection and relay it until the command ends and the client
    says it is done (or goes away)."""
    opener = getattr(server.ops, "open_session", None)
    pty = req.get("pty")
    try:
        if opener is None:
            from aifactory_cli.errors import RemoteError

            raise RemoteError("this connection agent cannot open interactive sessions")
        session: Session = opener(str(req.get("command", "")), PtyRequest(**pty) if isinstance(pty, dict) else None)
    except Exception as exc:
        conn.send_json(server._error_reply(exc))
        return
    conn.send_json(server._ok())
    lock = threading.Lock()
    client_done = threading.Event()

    def from_client() -> None:
        try:
            while True:
                kind, payload = conn.recv_frame()
                if kind == DATA:
                    session.send(payload)
                elif kind == END:
                    session.send_eof()
                elif kind == ABORT:
                    return
                elif kind == JSON:
                    msg = json.loads(payload)
                    if msg.get("close"):
                        return
                    if isinstance(msg.get("resize"), list) and len(msg["resize"]) == 2:
                        session.resize(int(msg["resize"][0]), int(msg["resize"][1]))
        except (PeerGone, ProtocolError, ValueError):
            return
        finally:
            client_done.set()

    reader = threading.Thread(target=from_client, name="session-input", daemon=True)
    reader.start()
    try:
        while not client_done.is_set():
            with contextlib.suppress(InterruptedError, ValueError, OSError):
                select.select([session.fileno()], [], [], 0.2)
            try:
                events = session.events()
            except Exception as exc:
                with lock:
                    conn.send_json({"error": error_to_json(exc)})
                break
            ended = False
            with lock:
                for kind, value in events:
                    if isinstance(value, int):
                        conn.send_json({"exit": value})
                        ended = True
                    else:
                        conn.send_frame(DATA, (STDOUT if kind == OUT else STDERR) + value)
            if ended:
                break
    finally:
        client_done.wait(10.0)  # the client says "close" once it has the exit status
        session.close()
        conn.close()  # a session's connection is not reused
