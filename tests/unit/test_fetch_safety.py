"""`fetch` when the transfer fails: a connection error mid-stream (paramiko's own errors included) or
a full local disk is exit 3 naming what was transferred, and nothing half-written is left under the
final names (the tar is received and unpacked in a temp dir beside the destination, then renamed)."""

from __future__ import annotations

import errno
import io
import tarfile
import threading
from pathlib import Path
from typing import Any

import paramiko
import pytest
from fakes import SITE, Session, fake_site, spec

from aifactory_cli.errors import EXIT_REMOTE, LocalWriteError, RemoteError
from aifactory_cli.jobs.store import Job
from aifactory_cli.sites.profile import SshSettings
from aifactory_cli.transport.ssh.connection import SshTransport
from aifactory_cli.transport.ssh.login import CLIENT_REKEY_BYTES, leave_rekeying_to_server


@pytest.fixture
def session(aif_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    return fake_site(tmp_path, monkeypatch)


def job_with_output(session: Session, tmp_path: Path) -> Job:
    with session() as svc:
        job = svc.submit(svc.prepare(spec(tmp_path, "out", 'run: echo hi\ndownload: ["out/**"]\n'), SITE))
    out = Path(job.workdir or "") / "out"
    out.mkdir()
    (out / "model.bin").write_bytes(b"new weights " * 100_000)  # 1.2 MB
    (out / "log.txt").write_text("done\n")
    return job


def cut_midway(fail: BaseException, after: int = 300_000):
    """A get_tar that writes the first `after` bytes of the real tar, reports them, then fails."""

    def get_tar(workdir: str, files: list[str], local_archive: Path, progress: Any = None) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name in files:
                tar.add(str(Path(workdir) / name), arcname=name, recursive=False)
        with open(local_archive, "wb") as fh:
            fh.write(buf.getvalue()[:after])
        if progress:
            progress(after)
        raise fail

    return get_tar


def leftovers(dest: Path) -> list[str]:
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) if dest.exists() else []


@pytest.mark.parametrize(
    "fail",
    [
        paramiko.SSHException("Key-exchange timed out waiting for key negotiation"),
        EOFError(),
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        RemoteError("the connection to fake.invalid was lost while a command was running"),
    ],
    ids=["ssh", "eof", "socket", "remote"],
)
def test_a_transport_failure_mid_fetch_is_exit_3_and_leaves_nothing(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: BaseException
) -> None:
    job = job_with_output(session, tmp_path)
    monkeypatch.setattr(session.fake, "get_tar", cut_midway(fail))
    dest = tmp_path / "got"
    with session() as svc, pytest.raises(RemoteError) as err:
        svc.fetch(job.id, dest)
    assert err.value.exit_code == EXIT_REMOTE
    assert "300,000 bytes" in err.value.message and "nothing was written" in err.value.message
    assert leftovers(dest) == []  # no file under a final name, no temp dir


def test_a_failed_fetch_keeps_what_was_there_before(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = job_with_output(session, tmp_path)
    dest = tmp_path / "got"
    (dest / "out").mkdir(parents=True)
    (dest / "out" / "model.bin").write_bytes(b"old weights")
    real = session.fake.get_tar
    monkeypatch.setattr(session.fake, "get_tar", cut_midway(EOFError()))
    with session() as svc, pytest.raises(RemoteError):
        svc.fetch(job.id, dest)
    assert leftovers(dest) == ["out", "out/model.bin"] and (dest / "out" / "model.bin").read_bytes() == b"old weights"
    monkeypatch.setattr(session.fake, "get_tar", real)
    with session() as svc:
        files = svc.fetch(job.id, dest).files
    assert files == ["out/log.txt", "out/model.bin"]
    assert (dest / "out" / "model.bin").read_bytes() == b"new weights " * 100_000
    assert leftovers(dest) == ["out", "out/log.txt", "out/model.bin"]


def test_a_full_local_disk_is_a_clear_exit_3(session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = job_with_output(session, tmp_path)
    monkeypatch.setattr(session.fake, "get_tar", cut_midway(OSError(errno.ENOSPC, "No space left on device")))
    dest = tmp_path / "got"
    with session() as svc, pytest.raises(LocalWriteError) as err:
        svc.fetch(job.id, dest)
    assert err.value.exit_code == EXIT_REMOTE
    assert "no space left on device" in err.value.message and str(dest) in err.value.message
    assert err.value.hint and "free space" in err.value.hint
    assert leftovers(dest) == []


def test_a_bug_in_the_transport_is_not_disguised_as_a_connection_error(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = job_with_output(session, tmp_path)
    monkeypatch.setattr(session.fake, "get_tar", cut_midway(TypeError("a bug")))
    dest = tmp_path / "got"
    with session() as svc, pytest.raises(TypeError):
        svc.fetch(job.id, dest)
    assert leftovers(dest) == []


# --- the SSH transport: a channel whose reads fail ------------------------------------------------------


class FailingChannel:
    """A paramiko channel as `SshTransport.stream` uses it: stdout gives `chunks`, then raises `fail`."""

    def __init__(self, chunks: list[bytes], fail: Exception) -> None:
        self.chunks, self.fail = list(chunks), fail
        self.status_event = threading.Event()
        self.exit_status = -1
        self.eof_received = False
        self.closed = False
        self.command = ""

    def exec_command(self, command: str) -> None:
        self.command = command
        marker = command.split("'%s\\n' ", 1)[1].split(";", 1)[0].encode()
        self.chunks.insert(0, marker + b"\n")

    def recv(self, n: int) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        raise self.fail

    def recv_stderr(self, n: int) -> bytes:
        self.status_event.wait(5)
        return b""

    def shutdown_write(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True
        self.status_event.set()


def test_an_ssh_error_while_reading_a_command_is_a_remote_error(monkeypatch: pytest.MonkeyPatch) -> None:
    ssh = SshTransport(SshSettings(host="fake.invalid"), site="fakesite", interactive=False)
    channel = FailingChannel([b"x" * 1000], paramiko.SSHException("Key-exchange timed out waiting for key negotiation"))
    monkeypatch.setattr(ssh, "_session", lambda: channel)
    got: list[bytes] = []
    with pytest.raises(RemoteError) as err:
        ssh.stream(["tar", "-c", "-f", "-", "big.bin"], stdout=got.append)
    assert err.value.exit_code == EXIT_REMOTE and "Key-exchange timed out" in err.value.message
    assert "outcome is unknown" in err.value.message and channel.closed and got == [b"x" * 1000]


def test_rekeying_is_left_to_the_server(tmp_path: Path) -> None:
    import socket

    a, b = socket.socketpair()
    transport = paramiko.Transport(a)
    try:
        assert transport.packetizer.REKEY_BYTES == 2**29  # paramiko's own: the 30 s stall at 1 GiB
        leave_rekeying_to_server(transport)
        assert transport.packetizer.REKEY_BYTES == CLIENT_REKEY_BYTES >= 2**37
    finally:
        transport.close()
        b.close()


@pytest.mark.parametrize("dead", [EOFError(), paramiko.SSHException("SSH session not active"), OSError("closed")])
def test_a_connection_that_dies_under_an_upload_is_a_broken_pipe_for_the_readers_to_explain(
    dead: BaseException,
) -> None:
    """The writer of a command's stdin: a dead link is a broken pipe (the channel's readers then say
    "the connection ... was lost"), never the raw EOFError that the agent once passed on as "the
    connection agent failed: EOFError"; packets go one max-size piece per sendall."""
    from aifactory_cli.transport.ssh.streams import ChannelWriter

    class Channel:
        out_max_packet_size = 32768

        def __init__(self) -> None:
            self.sent: list[int] = []

        def sendall(self, data: bytes) -> None:
            if len(self.sent) == 2:
                raise dead
            self.sent.append(len(data))

    channel = Channel()
    writer = ChannelWriter(channel)  # type: ignore[arg-type]
    with pytest.raises(BrokenPipeError):
        writer.write(b"x" * 100_000)
    assert writer.broken and channel.sent == [32704, 32704]


def test_a_bug_under_an_upload_is_not_a_broken_pipe() -> None:
    from aifactory_cli.transport.ssh.streams import ChannelWriter

    class Channel:
        out_max_packet_size = 32768

        def sendall(self, data: bytes) -> None:
            raise TypeError("a bug")

    with pytest.raises(TypeError):
        ChannelWriter(Channel()).write(b"x")  # type: ignore[arg-type]
