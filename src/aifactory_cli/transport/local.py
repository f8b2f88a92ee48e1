"""The local transport: commands run in bash on this machine, files are copied."""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import tempfile
from pathlib import Path

from aifactory_cli.errors import RemoteError, TunnelRefused
from aifactory_cli.transport import Command, CommandResult, Progress, Stdin, Tunnel, to_shell
from aifactory_cli.transport.tofile import FileSink, ToFile


class LocalTransport:
    name = "local"

    def __init__(self) -> None:
        self.commands_run = 0

    @property
    def username(self) -> str:
        """The user this process runs as (what `id -un` says)."""
        return pwd.getpwuid(os.getuid()).pw_name

    def connect(self) -> None:
        """Nothing to log in to."""

    def run(self, command: Command, *, stdin: Stdin = None, timeout: float | None = None) -> CommandResult:
        self.commands_run += 1
        if callable(stdin):
            with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
                proc = subprocess.Popen(
                    ["bash", "-c", to_shell(command)], stdin=subprocess.PIPE, stdout=out, stderr=err
                )
                assert proc.stdin is not None
                try:
                    stdin(proc.stdin)  # type: ignore[arg-type]
                except BrokenPipeError:
                    pass
                finally:
                    with contextlib.suppress(BrokenPipeError):
                        proc.stdin.close()
                rc = proc.wait(timeout=timeout)
                out.seek(0)
                err.seek(0)
                return CommandResult(rc, out.read().decode(errors="replace"), err.read().decode(errors="replace"))
        try:
            proc2 = subprocess.run(
                ["bash", "-c", to_shell(command)],
                input=stdin if stdin is not None else b"",
                capture_output=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise RemoteError(f"local command timed out after {timeout} s: {to_shell(command)}") from exc
        return CommandResult(
            proc2.returncode, proc2.stdout.decode(errors="replace"), proc2.stderr.decode(errors="replace")
        )

    def get_tar(self, workdir: str, files: list[str], local_archive: Path, progress: Progress | None = None) -> None:
        """Pack `files` (relative to `workdir`) into a tar at `local_archive`."""
        import tarfile

        local_archive.parent.mkdir(parents=True, exist_ok=True)  # as over SSH
        with tarfile.open(local_archive, "w|") as tar:  # a stream: `local_archive` may be a FIFO
            for name in files:
                full = Path(workdir) / name
                tar.add(str(full), arcname=name, recursive=False)
                if progress:
                    progress(full.stat().st_size)

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
        with (
            FileSink(local, append=append, digest=digest, progress=progress) as sink,
            tempfile.TemporaryFile() as err,
            tempfile.TemporaryFile() as given,
        ):
            given.write(stdin or b"")
            given.seek(0)
            proc = subprocess.Popen(["bash", "-c", to_shell(command)], stdin=given, stdout=subprocess.PIPE, stderr=err)
            assert proc.stdout is not None
            try:
                while data := proc.stdout.read1(1 << 20):  # type: ignore[attr-defined]
                    sink(data)
            finally:
                proc.stdout.close()
                rc = proc.wait()
            err.seek(0)
            return sink.result(rc, err.read())

    def read_bytes(self, path: str, offset: int = 0) -> bytes:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read()

    def open_tunnel(self, host: str, port: int) -> Tunnel:
        """A socket to `host:port` from this machine (the local site's jobs run here)."""
        import socket

        from aifactory_cli.transport.relay import SocketPipe

        try:
            sock = socket.create_connection((host, port), timeout=10)
        except OSError as exc:
            raise TunnelRefused(
                f"cannot connect to {host}:{port}: {exc.strerror or exc}", "is the job's server listening there yet?"
            ) from exc
        sock.settimeout(None)
        return SocketPipe(sock)

    def close(self) -> None:
        pass
