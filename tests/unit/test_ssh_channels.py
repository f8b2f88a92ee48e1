"""One channel at a time (sshd `MaxSessions 1`): a refused channel on a live connection lets the
idle SFTP channel go and asks again on the same connection (no new login); files are then read
with `tail -c` over the command channel. No server: a stand-in for paramiko's Transport."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import paramiko
import pytest

from aifactory_cli.errors import RemoteError
from aifactory_cli.transport.ssh.connection import SshTransport, Streamed
from aifactory_cli.transport.ssh.files import MISSING_RC, exec_read_command
from aifactory_cli.transport.ssh.settings import SshSettings


class _Sftp:
    closed = False

    def close(self) -> None:
        self.closed = True


class _ChannelMap(list[object]):
    def values(self) -> list[object]:  # as paramiko's ChannelMap
        return list(self)


class _OneSessionServer:
    """Refuses a channel while one of ours is open (as sshd with MaxSessions 1)."""

    def __init__(self, sftp: _Sftp | None, refuse_extra: int = 0) -> None:
        self.sftp = sftp
        self.refuse_extra = refuse_extra  # refusals after ours are gone (a close the server has not seen)
        self.opened = 0
        self.tunnels: list[_Sftp] = []  # direct-tcpip channels: sshd's MaxSessions does not count them

    @property
    def _channels(self) -> _ChannelMap:  # paramiko's map of our open channels
        sessions = [self.sftp] if self.sftp is not None and not self.sftp.closed else []
        return _ChannelMap(sessions + [t for t in self.tunnels if not t.closed])

    def is_active(self) -> bool:
        return True

    def open_session(
        self, window_size: int | None = None, max_packet_size: int | None = None, timeout: float | None = None
    ) -> object:
        self.asked = (window_size, max_packet_size)  # what a command channel asks the server for
        if self.sftp is not None and not self.sftp.closed:
            raise paramiko.ChannelException(2, "Connect failed")
        if self.refuse_extra:
            self.refuse_extra -= 1
            raise paramiko.ChannelException(2, "Connect failed")
        self.opened += 1
        return object()


def _transport(server: _OneSessionServer) -> SshTransport:
    tr = SshTransport(SshSettings(host="h.example.org", user="u"), site="s", interactive=False)
    tr._transport = server  # type: ignore[assignment]
    tr._sftp = server.sftp  # type: ignore[assignment]
    tr.connections_opened = 1
    tr._reconnect = lambda: pytest.fail("a refused channel must not log in again")  # type: ignore[method-assign]
    return tr


def test_a_refused_channel_lets_the_idle_sftp_go_and_asks_again_without_a_login(monkeypatch: Any) -> None:
    monkeypatch.setattr("aifactory_cli.transport.ssh.config.lookup", _fake_lookup)
    sftp = _Sftp()
    server = _OneSessionServer(sftp, refuse_extra=2)
    tr = _transport(server)
    tr._session()
    assert sftp.closed and tr._sftp is None and tr.single_session
    assert server.opened == 1 and tr.connections_opened == 1
    assert tr._sftp_client() is None  # no SFTP channel from now on: reads go over commands
    assert server.asked == (4 << 20, 128 << 10)  # a 4 MiB window, 128 KiB packets (paramiko: 2 MiB, 32 KiB)


def test_a_refused_channel_does_not_wait_for_open_tunnels(monkeypatch: Any) -> None:
    """A forwarded connection (a browser's, a notebook's websocket) may stay open for hours; the
    server does not count it against MaxSessions, so the refused session asks again at once."""
    import threading

    monkeypatch.setattr("aifactory_cli.transport.ssh.config.lookup", _fake_lookup)
    sftp = _Sftp()
    server = _OneSessionServer(sftp)
    tunnel = _Sftp()  # an open channel; only its being open matters here
    server.tunnels.append(tunnel)
    tr = _transport(server)
    tr._tunnels.add(tunnel)  # type: ignore[arg-type]
    done = threading.Event()
    threading.Thread(target=lambda: (tr._session(), done.set()), daemon=True).start()
    assert done.wait(5), "the session waited for the open tunnel"
    assert sftp.closed and not tunnel.closed and server.opened == 1 and tr.connections_opened == 1


def test_an_sftp_read_in_progress_is_not_cut_the_command_waits_for_it(monkeypatch: Any) -> None:
    import threading
    import time

    monkeypatch.setattr("aifactory_cli.transport.ssh.config.lookup", _fake_lookup)
    sftp = _Sftp()
    server = _OneSessionServer(sftp)
    tr = _transport(server)
    tr._sftp_used(1)  # another thread is reading a file over SFTP
    done = threading.Event()
    threading.Thread(target=lambda: (tr._session(), done.set()), daemon=True).start()
    time.sleep(0.3)
    assert not sftp.closed and not done.is_set()  # the read goes on; the command waits
    tr._sftp_used(-1)  # the read ends (RemoteReader.close)
    assert done.wait(5) and sftp.closed and server.opened == 1


def test_a_read_asked_for_while_a_command_waits_does_not_hold_up_the_read_in_progress(monkeypatch: Any) -> None:
    """A command waits (holding the connection lock) for a read in progress; a second read asked
    for meanwhile must not take the SFTP lock that the first read needs for its next chunk."""
    import threading
    import time

    monkeypatch.setattr("aifactory_cli.transport.ssh.config.lookup", _fake_lookup)
    sftp = _Sftp()
    tr = _transport(_OneSessionServer(sftp))
    tr.stream = lambda command, *, stdout, **_: (stdout(b"second"), Streamed(0, b"", 0))[1]  # type: ignore[method-assign]
    tr._sftp_used(1)  # the first read is in progress
    threading.Thread(target=tr._session, daemon=True).start()
    time.sleep(0.3)  # the command waits for the first read to end
    second: list[bytes] = []
    threading.Thread(target=lambda: second.append(tr.read_bytes("other")), daemon=True).start()
    time.sleep(0.3)
    got = tr._sftp_lock.acquire(timeout=2)  # the first read's next chunk
    assert got, "the second read holds the SFTP lock while it waits: the first read cannot go on"
    tr._sftp_lock.release()
    tr._sftp_used(-1)  # the first read ends
    deadline = time.monotonic() + 5
    while not second and time.monotonic() < deadline:
        time.sleep(0.02)
    assert second == [b"second"] and sftp.closed  # read over the command channel after the switch


def test_a_channel_refused_for_good_is_a_remote_error(monkeypatch: Any) -> None:
    monkeypatch.setattr("aifactory_cli.transport.ssh.config.lookup", _fake_lookup)
    monkeypatch.setattr("aifactory_cli.transport.ssh.connection.CHANNEL_RETRY_DELAYS", (0.0, 0.0))
    tr = _transport(_OneSessionServer(None, refuse_extra=99))
    with pytest.raises(RemoteError, match="refused one more session"):
        tr._session()


def test_reads_go_over_the_command_channel_in_single_session_mode(monkeypatch: Any) -> None:
    monkeypatch.setattr("aifactory_cli.transport.ssh.config.lookup", _fake_lookup)
    tr = _transport(_OneSessionServer(None))
    tr.single_session = True
    sent: list[str] = []

    def stream(command: str, *, stdout: Any, **_: Any) -> Streamed:
        sent.append(command)
        if "missing" in command:
            return Streamed(MISSING_RC, b"", 0)
        if "denied" in command:
            return Streamed(1, b"tail: cannot open 'denied': Permission denied\n", 0)
        stdout(b"hello")
        return Streamed(0, b"", 0)

    tr.stream = stream  # type: ignore[method-assign]
    assert tr.read_bytes("~/jobs/x/stdout.log", 3) == b"hello"
    assert sent[0] == exec_read_command("jobs/x/stdout.log", 3)
    with pytest.raises(FileNotFoundError):
        tr.read_bytes("missing")
    with pytest.raises(RemoteError, match="Permission denied"):
        tr.read_bytes("denied")


def test_exec_read_command_in_a_real_shell(tmp_path: Path) -> None:
    (tmp_path / "a file").write_bytes(b"0123456789")

    def run(path: str, offset: int) -> tuple[int, bytes]:
        done = subprocess.run(["sh", "-c", exec_read_command(path, offset)], cwd=tmp_path, capture_output=True)
        return done.returncode, done.stdout

    assert run("a file", 0) == (0, b"0123456789")
    assert run("a file", 7) == (0, b"789")
    assert run("a file", 10) == (0, b"")
    assert run(str(tmp_path / "a file"), 2)[1] == b"23456789"
    assert run("nope; touch pwned", 0)[0] == MISSING_RC
    assert run("-n", 0)[0] == MISSING_RC  # "./-n": never an option to tail
    assert not (tmp_path / "pwned").exists()


def _fake_lookup(host: str, **kw: Any) -> Any:
    from aifactory_cli.transport.ssh.openssh import HostOptions

    return HostOptions({"hostname": [host], "port": ["22"], "user": [kw.get("user") or "u"]}, "test")


def test_sftp_broken_by_a_noisy_login_shell_is_a_remote_error(monkeypatch: Any) -> None:
    monkeypatch.setattr("aifactory_cli.transport.ssh.config.lookup", _fake_lookup)

    def broken(transport: Any) -> Any:
        raise paramiko.SFTPError("Garbage packet received")  # what paramiko says when a shell printed first

    monkeypatch.setattr(paramiko.SFTPClient, "from_transport", staticmethod(broken))
    tr = _transport(_OneSessionServer(None))
    with pytest.raises(RemoteError, match=r"cannot start SFTP.*Garbage packet") as info:
        tr.read_bytes("x")
    assert "[[ $- == *i* ]]" in (info.value.hint or "")
