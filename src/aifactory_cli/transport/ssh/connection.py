"""`SshTransport`: commands and files on a site over one paramiko connection.

- One SSH connection per `SshTransport`, opened on first use and reused for every command and
  file transfer (sites such as JSC block hosts that connect too often). A dead connection is
  reopened before a command (with back-off), never in the middle of one.
- Commands run in the login shell like `ssh host 'cmd'`; stdout and stderr each start with a
  marker line so that banners printed by shell start-up files are cut off (and counted:
  `CommandResult.noise_bytes`).
- Files are read over SFTP on the same connection. paramiko's SFTP client is not safe for
  concurrent requests from several threads, so every SFTP call holds one lock (streams take it per
  chunk, so that they interleave): the connection agent serves many clients from threads.
- A site that allows one channel per connection (sshd `MaxSessions 1`) refuses a second channel:
  that is never a reason to log in again. The idle SFTP channel is let go, the channel is asked
  for again once ours are closed, and from then on (`single_session`) channels are used one at a
  time and files are read with `tail -c` on the command channel (files.py).

The connection agent (`transport/agent/server.py`) uses the public streaming methods (`stream`,
`open_read`, `open_session`) and the `on_login` / `reconnect_failed` hooks.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aifactory_cli.errors import AuthError, HostKeyError, RemoteError
from aifactory_cli.transport import Command, CommandResult, Progress, Stdin, to_shell, write_stdin
from aifactory_cli.transport.ssh.auth import stdin_isatty
from aifactory_cli.transport.ssh.config import SshRoute, resolve_ssh
from aifactory_cli.transport.ssh.files import FileReads, RemoteReader, remote_path
from aifactory_cli.transport.ssh.login import open_route
from aifactory_cli.transport.ssh.session import SshSession, session_refused
from aifactory_cli.transport.ssh.streams import ChannelWriter, MarkerCut, marked
from aifactory_cli.transport.tofile import check_tar, tar_command, tar_names

if TYPE_CHECKING:
    import paramiko

    from aifactory_cli.transport.interactive import PtyRequest
    from aifactory_cli.transport.ssh.settings import SshSettings

RECONNECT_DELAYS = (0.5, 1.0, 2.0)
KEEPALIVE_SECONDS = 30
CHUNK = 4 * 1024 * 1024  # one read from the channel (all it holds: smaller reads memmove the rest, per read)
# What a channel asks the server to send: up to 4 MiB in flight, in packets of up to 128 KiB
# (paramiko's defaults: 2 MiB, 32 KiB). Fewer packets, fewer Python calls per byte: a 1 GiB `cat` on
# the bed took 3.91 s against 4.58 s (medians of 6, alternated). The SSH packet limit is 256 KiB.
CHANNEL_WINDOW = 4 * 1024 * 1024
CHANNEL_PACKET = 128 * 1024
CHANNEL_RETRY_DELAYS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # a refused channel with none of ours open
CHANNEL_WAIT_LIMIT = 600.0  # seconds a refused channel waits for our other channels to close
__all__ = ["RemoteReader", "SshTransport", "Streamed", "remote_path"]


@dataclass
class Streamed:
    """What a command whose stdout went into a sink left: its exit code, its stderr (after the
    marker) and how many bytes the login shell printed before the markers."""

    rc: int
    stderr: bytes
    noise_bytes: int


class SshTransport(FileReads):
    """Commands and files on a site over one paramiko connection (see the module docstring)."""

    name = "ssh"

    def __init__(
        self,
        settings: SshSettings,
        *,
        site: str,
        interactive: bool | None = None,
        on_login: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.site = site
        self.interactive = interactive
        self.on_login = on_login  # called in the thread that logged in, after each login
        self.connections_opened = 0
        self.commands_run = 0
        self.connect_seconds: float | None = None  # time of the last (re)connect
        self.reconnect_failed = False  # a connection had been open, was lost, and could not be reopened
        self._route: SshRoute | None = None
        self._transport: paramiko.Transport | None = None
        self._jumps: list[paramiko.Transport] = []
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()
        self._sftp_lock = threading.Lock()
        # the server refused a second channel (sshd MaxSessions 1): from then on one channel at a
        # time (`_slot`), and files are read over the command channel instead of SFTP
        self.single_session = False
        self._interactive: list[paramiko.Channel] = []  # open_session's channels: held until the user ends them
        # open_tunnel's direct-tcpip channels: MaxSessions does not count them, so a refused session
        # never waits for them (a browser or notebook may hold one open for hours)
        self._tunnels: weakref.WeakSet[paramiko.Channel] = weakref.WeakSet()
        self._slot = threading.Lock()
        self._sftp_users = 0  # SFTP reads in progress (their client must not be closed under them)
        self._users_lock = threading.Lock()

    # --- public info --------------------------------------------------------------------------

    @property
    def route(self) -> SshRoute:
        if self._route is None:
            self._route = resolve_ssh(self.settings)
        return self._route

    @property
    def username(self) -> str:
        """The user logged in as on the login node."""
        return self.route.target.user

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    def host_key(self) -> str | None:
        """The login node's host key as this connection verified it (`TYPE BASE64`, a known_hosts
        line's tail), connecting first; None when it cannot tell."""
        self.connect()
        transport = self._transport
        key = transport.get_remote_server_key() if transport is not None else None
        return f"{key.get_name()} {key.get_base64()}" if key is not None else None

    def __enter__(self) -> SshTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- connecting -------------------------------------------------------------------------------

    def connect(self) -> None:
        """Open the connection now (normally done by the first command)."""
        with self._lock:
            if not self.connected:
                self._reconnect()

    def _reconnect(self) -> None:
        """Connect; when a connection had been open before, retry with back-off."""
        self._drop()
        if self.connections_opened == 0:
            self._open()
            return
        last: RemoteError | None = None
        try:
            for delay in RECONNECT_DELAYS:
                time.sleep(delay)
                try:
                    self._open()
                    return
                except (HostKeyError, AuthError):
                    raise
                except RemoteError as exc:
                    last = exc
        except BaseException:
            self.reconnect_failed = True
            raise
        self.reconnect_failed = True
        assert last is not None
        raise RemoteError(
            f"lost the connection to {self.route.target.address} and could not reconnect "
            f"({len(RECONNECT_DELAYS)} tries): {last.message}",
            last.hint,
            where=self.site,
        )

    def _open(self) -> None:
        interactive = self.interactive if self.interactive is not None else stdin_isatty()
        started = time.monotonic()
        timeout = self.route.connect_timeout
        opened = open_route(self.route, interactive=interactive, timeout=timeout, site=self.site)
        self._jumps, self._transport = opened[:-1], opened[-1]
        self._transport.set_keepalive(KEEPALIVE_SECONDS)
        self.connections_opened += 1
        self.connect_seconds = time.monotonic() - started
        if self.on_login is not None:
            self.on_login()

    def _drop(self) -> None:
        """Forget the current connection (closing whatever is left of it)."""
        sftp, self._sftp = self._sftp, None
        transport, self._transport = self._transport, None
        jumps, self._jumps = self._jumps, []
        for closable in (sftp, transport, *reversed(jumps)):
            if closable is not None:
                with contextlib.suppress(Exception):
                    closable.close()

    def _session(self) -> paramiko.Channel:
        """A new channel on the connection; (re)connects first if needed. Nothing has run yet, so
        reconnecting here is always safe. A channel the server refuses on a live connection is
        never a reason to log in again (`_open_channel`)."""
        import paramiko

        with self._lock:
            if self._transport is not None and self._transport.is_active():
                try:
                    return self._open_channel()
                except paramiko.ChannelException as exc:  # alive, refuses one more (MaxSessions): keep it
                    raise session_refused(self.route.target.address, self.site, exc) from exc
                except (paramiko.SSHException, EOFError, OSError):
                    pass  # dead or hung connection: reopen below
            self._reconnect()
            assert self._transport is not None
            try:
                return self._open_channel()
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if not isinstance(exc, paramiko.ChannelException):
                    self._drop()
                raise self._refused(exc) from exc

    def _open_channel(self) -> paramiko.Channel:
        """A session channel. When the server refuses it (sshd `MaxSessions`; OpenSSH answers
        "Connect failed"), switch to one channel at a time: let our idle SFTP channel go, wait for
        our other channels to close, and ask again on the same connection."""
        import paramiko

        transport = self._transport
        assert transport is not None
        retries = iter(CHANNEL_RETRY_DELAYS)
        give_up = time.monotonic() + CHANNEL_WAIT_LIMIT
        while True:
            try:
                return transport.open_session(
                    window_size=CHANNEL_WINDOW, max_packet_size=CHANNEL_PACKET, timeout=self.route.connect_timeout
                )
            except paramiko.ChannelException:
                self._interactive = [ch for ch in self._interactive if not ch.closed]
                if self._interactive:  # a shell or exec of the user's holds a channel: no waiting for it
                    raise
                self.single_session = True
                self._release_sftp()  # unless a read is using it
                waited = False
                # ours still open (another thread's command or read, the idle SFTP channel): wait
                # for them here, without asking the server again, letting SFTP go once unused
                while self._sessions_open(transport) and transport.is_active():
                    self._release_sftp()
                    if time.monotonic() > give_up:
                        raise
                    time.sleep(0.02)
                    waited = True
                if not waited:
                    delay = next(retries, None)
                    if delay is None:
                        raise
                    time.sleep(delay)  # the server may not have seen our last channel's close yet

    def _sessions_open(self, transport: paramiko.Transport) -> bool:
        """Any of our channels open on `transport` other than tunnels."""
        channels = transport._channels.values()  # type: ignore[attr-defined]
        return any(ch not in self._tunnels for ch in channels)

    def open_session(self, line: str, pty: PtyRequest | None = None) -> SshSession:
        """`line` on its own channel, its output streamed (`transport.interactive`)."""
        channel = self._session()
        self._interactive.append(channel)
        return SshSession(self, channel, line, pty)

    def _refused(self, exc: Exception) -> RemoteError:
        return RemoteError(
            f"cannot open a session on {self.route.target.address}: {exc or type(exc).__name__}", where=self.site
        )

    def open_tunnel(self, host: str, port: int) -> paramiko.Channel:
        """A direct-tcpip channel to `host:port` from the login node (`tunnel.py`)."""
        from aifactory_cli.transport.ssh.tunnel import open_channel

        return open_channel(self, host, port)

    # --- commands -----------------------------------------------------------------------------------

    def run(self, command: Command, *, stdin: Stdin = None, timeout: float | None = None) -> CommandResult:
        out = io.BytesIO()
        done = self.stream(command, stdout=out.write, stdin=stdin, timeout=timeout)
        return CommandResult(
            done.rc, out.getvalue().decode(errors="replace"), done.stderr.decode(errors="replace"), done.noise_bytes
        )

    def stream(
        self,
        command: Command,
        *,
        stdout: Callable[[bytes], object],
        stdin: Stdin = None,
        timeout: float | None = None,
    ) -> Streamed:
        """Run `command` in the login shell, streaming its stdout (after the marker) into `stdout`."""
        line = to_shell(command)
        mark, wrapped = marked(line)
        with self._slot if self.single_session else contextlib.nullcontext():
            return self._stream(line, wrapped, mark, stdout, stdin, timeout)

    def _stream(
        self,
        line: str,
        wrapped: str,
        mark: str,
        stdout: Callable[[bytes], object],
        stdin: Stdin,
        timeout: float | None,
    ) -> Streamed:
        channel = self._session()
        self.commands_run += 1
        err_buf = io.BytesIO()
        out_cut = MarkerCut(mark.encode(), stdout)
        err_cut = MarkerCut(mark.encode(), err_buf.write)
        timed_out = threading.Event()
        sink_errors: list[BaseException] = []
        link_errors: list[Exception] = []

        def on_timeout() -> None:
            timed_out.set()
            channel.close()

        timer = threading.Timer(timeout, on_timeout) if timeout is not None else None
        try:
            channel.exec_command(wrapped)
        except Exception as exc:
            channel.close()
            raise RemoteError(
                f"the connection to {self.route.target.address} failed while starting a command; "
                f"it may or may not have run: {line[:200]}",
                "check on the site whether it took effect before retrying",
                where=self.site,
            ) from exc

        def pump(recv: Callable[[int], bytes], cut: MarkerCut) -> None:
            try:
                while True:
                    try:
                        data = recv(CHUNK)
                    except Exception as exc:  # the SSH connection failed (paramiko, socket, EOF)
                        link_errors.append(exc)
                        channel.close()
                        return
                    if not data:
                        break
                    cut.feed(data)
                cut.finish()
            except BaseException as exc:  # a failing sink (disk full...): stop the command
                sink_errors.append(exc)
                channel.close()

        readers = [
            threading.Thread(target=pump, args=(channel.recv, out_cut), daemon=True),
            threading.Thread(target=pump, args=(channel.recv_stderr, err_cut), daemon=True),
        ]
        for t in readers:
            t.start()
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            self._feed_stdin(channel, stdin)
            for t in readers:
                t.join()
            channel.status_event.wait()
        except BaseException:  # the stdin writer failed locally, Ctrl-C...: stop the remote side too
            channel.close()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        rc = channel.exit_status
        lost = not channel.eof_received or self._transport is None or not self._transport.is_active()
        channel.close()
        if sink_errors:
            raise sink_errors[0]
        if link_errors:
            self._drop()
            failure = link_errors[0]
            raise RemoteError(
                f"the connection to {self.route.target.address} failed while a command was running "
                f"({type(failure).__name__}: {failure}); its outcome is unknown: {line[:200]}",
                "check on the site whether it took effect before retrying; the next command reconnects",
                where=self.site,
            ) from failure
        if timed_out.is_set():
            raise RemoteError(
                f"command timed out after {timeout:g} s on {self.site} (it may still be running there): {line[:200]}",
                where=self.site,
            )
        if rc == -1 and lost:
            self._drop()
            raise RemoteError(
                f"the connection to {self.route.target.address} was lost while a command was running; "
                f"its outcome is unknown: {line[:200]}",
                "check on the site whether it took effect before retrying; the next command reconnects",
                where=self.site,
            )
        if rc == -1:  # closed without an exit status (killed by a signal), like OpenSSH
            rc = 255
        return Streamed(rc, err_buf.getvalue(), out_cut.noise_bytes + err_cut.noise_bytes)

    @staticmethod
    def _feed_stdin(channel: paramiko.Channel, stdin: Stdin) -> None:
        if stdin is not None:
            raw = ChannelWriter(channel)
            writer = io.BufferedWriter(raw, buffer_size=256 * 1024)
            try:
                write_stdin(writer, stdin)
            except BrokenPipeError:
                if not raw.broken:  # a local pipe, not our channel
                    raise
            finally:
                raw.discard = True  # whatever is still buffered (after an error) goes nowhere
                writer.close()
        with contextlib.suppress(OSError, EOFError):
            channel.shutdown_write()

    # --- files: reads and `run_to_file` in files.FileReads; tar streams here --------------------------

    def get_tar(self, workdir: str, files: list[str], local_archive: Path, progress: Progress | None = None) -> bool:
        """Pack `files` (relative to `workdir`) on the site and stream the tar into `local_archive`;
        True when the stream that arrived is the one the site's tar wrote whole (`tofile.check_tar`)."""
        done = self.run_to_file(
            tar_command(workdir), local_archive, stdin=tar_names(files), progress=progress, digest=True
        )
        return check_tar(done, workdir, self.site)

    def close(self) -> None:
        with self._lock:
            self._drop()
