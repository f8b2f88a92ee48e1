"""Reading a site's files: over SFTP (`RemoteReader`, chunk by chunk under the transport's SFTP
lock), or, where a site allows one channel per connection (`MaxSessions 1`), with `tail` on the
command channel (`exec_read_command`), so no SFTP channel has to stay open beside the commands."""

from __future__ import annotations

import contextlib
import io
import shlex
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from aifactory_cli.errors import RemoteError
from aifactory_cli.transport import Command, Progress, Stdin
from aifactory_cli.transport.tofile import FileSink, ToFile

if TYPE_CHECKING:
    from pathlib import Path

    import paramiko

    from aifactory_cli.transport.ssh.config import SshRoute
    from aifactory_cli.transport.ssh.connection import Streamed

READ_CHUNK = 256 * 1024  # one read from an SFTP file
MISSING_RC = 44  # what `exec_read_command` exits with when the file does not exist


def exec_read_command(path: str, offset: int) -> str:
    """A shell line that prints `path` from byte `offset` on (exit MISSING_RC: no such file)."""
    q = shlex.quote(path if path.startswith(("/", "./")) else "./" + path)
    return f"if [ -e {q} ]; then exec tail -c +{int(offset) + 1} -- {q}; else exit {MISSING_RC}; fi"


class FileReads:
    """`SshTransport`'s file reads (a mixin: the attributes below are the transport's)."""

    site: str
    single_session: bool
    _lock: threading.RLock
    _sftp_lock: threading.Lock
    _sftp: paramiko.SFTPClient | None
    _transport: paramiko.Transport | None
    _sftp_users: int
    _users_lock: threading.Lock

    @property
    def route(self) -> SshRoute:
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    def _reconnect(self) -> None:
        raise NotImplementedError

    def stream(self, command: Command, *, stdout: Callable[[bytes], object], stdin: Stdin = None) -> Streamed:
        raise NotImplementedError

    def _sftp_client(self) -> paramiko.SFTPClient | None:
        """The connection's SFTP client, started on first use; None when the server allows one
        channel at a time (files are then read over the command channel)."""
        import paramiko

        with self._lock:
            if self.single_session:
                return None
            if self._sftp is not None and self.connected:
                self._sftp_used(1)
                return self._sftp
            self._sftp = None
            if not self.connected:
                self._reconnect()
            for attempt in (1, 2):
                assert self._transport is not None
                try:
                    self._sftp = paramiko.SFTPClient.from_transport(self._transport)
                except paramiko.ChannelException:
                    if not self.connected:
                        raise
                    self.single_session = True  # sshd MaxSessions: no SFTP channel beside the commands
                    return None
                except (paramiko.SSHException, paramiko.SFTPError, EOFError, OSError) as exc:
                    if attempt == 1 and not self.connected:
                        self._reconnect()  # it died just now: nothing was transferred yet
                        continue
                    raise RemoteError(
                        f"cannot start SFTP on {self.route.target.address}: {exc or type(exc).__name__}",
                        "a shell start-up file that prints text (~/.bashrc) breaks SFTP; print only when "
                        "the shell is interactive ([[ $- == *i* ]])",
                        where=self.site,
                    ) from exc
                if self._sftp is not None:
                    self._sftp_used(1)
                    return self._sftp
            raise RemoteError(f"cannot start SFTP on {self.route.target.address}", where=self.site)

    def sftp_error(self, exc: Exception, what: str, path: str) -> Exception:
        """An SFTP failure as FileNotFoundError (missing file) or RemoteError."""
        if isinstance(exc, FileNotFoundError):
            return exc
        if isinstance(exc, OSError) and getattr(exc, "errno", None) == 2:
            return FileNotFoundError(2, f"no such file on {self.site}", path)
        return RemoteError(f"cannot {what} {path} on {self.site}: {exc or type(exc).__name__}", where=self.site)

    def open_read(self, path: str, offset: int = 0) -> RemoteReader:
        """The file's content from `offset` on, as chunks (iterate, then close); a missing file
        raises FileNotFoundError here."""
        rpath = remote_path(path)
        # not under `_sftp_lock`: a command waiting (under `_lock`) for a read to end must not
        # block the read's next chunk behind a thread that holds `_sftp_lock` and wants `_lock`
        sftp = self._sftp_client()  # counted as used (`_sftp_users`) when not None
        with self._sftp_lock:
            if sftp is not None:
                try:
                    fh = sftp.open(rpath, "rb")
                except Exception as exc:
                    self._sftp_used(-1)
                    raise self.sftp_error(exc, "read", rpath) from exc
                try:
                    size = fh.stat().st_size or 0
                    if offset < size:
                        fh.seek(offset)
                        fh.prefetch(size)
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        fh.close()
                    self._sftp_used(-1)
                    raise self.sftp_error(exc, "read", rpath) from exc
                return RemoteReader(self, fh, rpath, empty=offset >= size, counted=True)
        return in_memory(self, self._exec_read(rpath, offset), rpath)

    def _exec_read(self, rpath: str, offset: int) -> bytes:
        """The file over the command channel (`tail -c`), for servers with one channel at a time."""
        out = io.BytesIO()
        done = self.stream(exec_read_command(rpath, offset), stdout=out.write)
        if done.rc == MISSING_RC:
            raise FileNotFoundError(2, f"no such file on {self.site}", rpath)
        if done.rc != 0:
            err = done.stderr.decode(errors="replace").strip()
            raise RemoteError(f"cannot read {rpath} on {self.site}: {err or f'exit {done.rc}'}", where=self.site)
        return out.getvalue()

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
        """Run `command`, its stdout written into `local` (see `transport.tofile`)."""
        with FileSink(local, append=append, digest=digest, progress=progress) as sink:
            done = self.stream(command, stdout=sink, stdin=stdin)
        return sink.result(done.rc, done.stderr)

    def read_bytes(self, path: str, offset: int = 0) -> bytes:
        reader = self.open_read(path, offset)
        try:
            return b"".join(reader)
        finally:
            reader.close()

    def _release_sftp(self) -> None:
        """Close the SFTP channel unless a read is using it (called under `_lock`)."""
        with self._users_lock:
            if self._sftp_users:
                return
            sftp, self._sftp = self._sftp, None
        if sftp is not None:
            with contextlib.suppress(Exception):
                sftp.close()

    def _sftp_used(self, delta: int) -> None:
        with self._users_lock:
            self._sftp_users += delta


class RemoteReader:
    """A file being read over SFTP, chunk by chunk (each chunk under the transport's SFTP lock);
    or, read already (over the command channel), from memory."""

    def __init__(self, ssh: FileReads, fh: Any, path: str, empty: bool, counted: bool = False) -> None:
        self.ssh, self.fh, self.path, self.empty = ssh, fh, path, empty
        self.counted = counted  # holds one of the transport's `_sftp_users` until closed

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
        if self.counted:
            self.counted = False
            self.ssh._sftp_used(-1)


def remote_path(path: str) -> str:
    """SFTP paths are relative to the home directory; `~/x` and `$HOME/x` mean the same there."""
    for prefix in ("~/", "$HOME/", "${HOME}/"):
        if path.startswith(prefix):
            return path[len(prefix) :] or "."
    return "." if path in ("~", "$HOME", "${HOME}") else path


def in_memory(ssh: FileReads, data: bytes, path: str) -> RemoteReader:
    return RemoteReader(ssh, io.BytesIO(data), path, empty=not data)
