"""aifactory's own OpenSSH master (transport/ssh/ownmaster.py): when it may log in, the `ssh` command
line that starts it (keys only, the verified host key, never a prompt), a refusal remembered, and
when `bulk_transport` asks for it. The `ssh` here is a fake script; the real login is in
tests/real/test_own_master_real.py."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aifactory_cli.transport.ssh import mux, ownmaster
from aifactory_cli.transport.ssh.openssh import HostOptions
from aifactory_cli.transport.ssh.settings import SshSettings

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ"

FAKE_SSH = """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE_ARGV"
echo x >> "$FAKE_CALLS"
case " $* " in
  *" -O check "*) exit "${FAKE_CHECK_RC:-0}";;
  *" -O exit "*) echo exit >> "$FAKE_CALLS"; exit 0;;
esac
if [ -n "$FAKE_LOGIN_ERR" ]; then echo "$FAKE_LOGIN_ERR" >&2; exit 255; fi
exit 0
"""


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    binary = tmp_path / "bin" / "ssh"
    binary.parent.mkdir()
    binary.write_text(FAKE_SSH)
    binary.chmod(0o755)
    monkeypatch.setenv("FAKE_ARGV", str(tmp_path / "argv"))
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls"))
    short = Path(tempfile.mkdtemp(prefix="aifot-", dir="/tmp"))  # the master's private dir goes here
    monkeypatch.setattr(tempfile, "tempdir", str(short))
    for var in ("FAKE_CHECK_RC", "FAKE_LOGIN_ERR", mux.OFF_ENV):
        monkeypatch.delenv(var, raising=False)
    yield binary
    shutil.rmtree(short, ignore_errors=True)


def _options(**values: str) -> HostOptions:
    return HostOptions({k: [v] for k, v in values.items()}, "ssh -G")


def _calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().split() if path.exists() else []


def test_it_logs_in_only_with_a_plain_verified_key_and_no_jump_host() -> None:
    plain = SshSettings(host="login.example")
    assert ownmaster.usable(plain, _options(user="me"), KEY)
    pinned = SshSettings(host="login.example", host_key_fingerprints=["SHA256:" + "A" * 43])
    assert ownmaster.usable(pinned, _options(user="me"), KEY)  # OpenSSH gets the key the pins verified
    assert not ownmaster.usable(plain, _options(user="me"), None)
    assert not ownmaster.usable(plain, _options(user="me"), "ssh-ed25519-cert-v01@openssh.com AAAA")
    assert not ownmaster.usable(plain, _options(proxyjump="bastion"), KEY)
    assert ownmaster.usable(plain, _options(proxyjump="none"), KEY)
    assert not ownmaster.usable(SshSettings(host="login.example", proxy_jump="bastion"), _options(), KEY)
    assert not ownmaster.usable(plain, HostOptions({"user": ["me"]}, "paramiko"), KEY)


def test_the_master_never_prompts_and_accepts_only_the_verified_key(tmp_path: Path) -> None:
    route = mux.MuxRoute("/usr/bin/ssh", "/tmp/aif-ssh-x/m", "login.example", tmp_path / "cfg", user="me", port=2222)
    user = _options(
        ciphers="chacha20-poly1305@openssh.com,aes128-ctr,aes128-gcm@openssh.com", knownhostscommand="kh %H"
    )
    argv = ownmaster.master_argv(route, Path("/tmp/aif-ssh-x/known_hosts"), 15.0, "~/.ssh/id_site", user)
    assert argv[0] == "/usr/bin/ssh" and argv[-2:] == ["--", "login.example"]
    opts = argv[1:-2]
    assert {"-M", "-f", "-N"} <= set(opts) and opts[opts.index("-S") + 1] == "/tmp/aif-ssh-x/m"
    pairs = [opts[i + 1] for i, o in enumerate(opts) if o == "-o"]
    assert {
        "BatchMode=yes",
        "PasswordAuthentication=no",
        "KbdInteractiveAuthentication=no",
        "StrictHostKeyChecking=yes",
        "UserKnownHostsFile=/tmp/aif-ssh-x/known_hosts",
        f"GlobalKnownHostsFile={os.devnull}",
        f"HostKeyAlias={ownmaster.ALIAS}",
        "UpdateHostKeys=no",
        f"ControlPersist={ownmaster.PERSIST}",
        "ConnectTimeout=15",
        "Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr",  # the user's, GCM first
        "KnownHostsCommand=none",
    } <= set(pairs)
    plain = ownmaster.master_argv(route, Path("/k"), 15.0, None, _options(ciphers="aes256-ctr"))
    assert not any(a.startswith(("Ciphers=", "KnownHostsCommand=")) for a in plain) and "-i" not in plain
    assert opts[opts.index("-i") + 1] == os.path.expanduser("~/.ssh/id_site")
    assert opts[opts.index("-F") + 1] == os.devnull  # the config file is not there (as ssh -G is told)
    assert opts[opts.index("-l") + 1] == "me" and opts[opts.index("-p") + 1] == "2222"


def test_a_started_master_has_a_private_dir_with_the_key_and_is_stopped(fake_ssh: Path, tmp_path: Path) -> None:
    route = ownmaster.start_master(
        str(fake_ssh),
        "login.example",
        _options(user="me", port="22"),
        KEY,
        config_file=None,
        state=tmp_path / "state",
        connect_timeout=5,
    )
    assert route is not None and route.user == "me" and route.port == 22
    place = Path(route.control_path).parent
    assert place.parent == Path(tempfile.gettempdir()) and stat.S_IMODE(place.stat().st_mode) == 0o700
    assert (place / "known_hosts").read_text() == f"{ownmaster.ALIAS} {KEY}\n"
    assert _calls(tmp_path) == ["x", "x"]  # the login, then `-O check`
    ownmaster.stop_all()
    assert not place.exists()
    assert not (tmp_path / "state").exists()  # nothing remembered


@pytest.mark.parametrize(
    ("stderr", "remembered"),
    [
        ("hpcuser@login.example: Permission denied (keyboard-interactive).", True),
        ("Host key verification failed.", False),  # another login node behind the name: no login tried
        ("ssh: connect to host login.example port 22: Connection timed out", False),
    ],
)
def test_a_refused_login_is_remembered_for_a_day_a_network_failure_is_not(
    fake_ssh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stderr: str, remembered: bool
) -> None:
    monkeypatch.setenv("FAKE_LOGIN_ERR", stderr)
    state = tmp_path / "state"

    def start() -> mux.MuxRoute | None:
        return ownmaster.start_master(
            str(fake_ssh), "login.example", _options(user="me"), KEY, config_file=None, state=state, connect_timeout=5
        )

    assert start() is None
    assert not list(Path(tempfile.gettempdir()).glob("aif-ssh-*"))  # its dir removed
    markers = list(state.glob("openssh-refused-*")) if state.exists() else []
    assert len(markers) == (1 if remembered else 0)
    tried = len(_calls(tmp_path))
    monkeypatch.delenv("FAKE_LOGIN_ERR")
    if remembered:
        assert stderr in markers[0].read_text()
        assert start() is None and len(_calls(tmp_path)) == tried  # no second try within the day
        old = markers[0].stat().st_mtime - ownmaster.REFUSED_FOR - 1
        os.utime(markers[0], (old, old))
    assert start() is not None  # a day later (or after a network failure): tried again
    ownmaster.stop_all()


class _SshLike:
    name = "ssh"
    site = "bed"

    def __init__(self) -> None:
        self.settings = SshSettings(host="bed")


def test_bulk_transport_starts_an_own_master_only_for_a_large_transfer(monkeypatch: pytest.MonkeyPatch) -> None:
    route = mux.MuxRoute("ssh", "/tmp/aif-ssh-x/m", "bed")
    started: list[str | None] = []
    monkeypatch.setattr(mux, "find_master", lambda s: None)
    monkeypatch.setattr(mux, "own_master", lambda t, s: started.append(s.host) or route)
    small = _SshLike()
    assert mux.bulk_transport(small, ownmaster.MIN_BYTES - 1) is small  # type: ignore[arg-type]
    assert started == []
    large = _SshLike()
    runner = mux.bulk_transport(large, ownmaster.MIN_BYTES)  # type: ignore[arg-type]
    assert isinstance(runner, mux.OpenSshMux) and runner.own and started == ["bed"]
    assert "aifactory's own" in (mux.bulk_via(runner) or "") and "ControlMaster" not in runner.via
    assert mux.bulk_transport(large, ownmaster.MIN_BYTES) is runner and started == ["bed"]  # type: ignore[arg-type]
    # a transfer that was small first may still get one when a large one follows
    assert mux.bulk_transport(small, ownmaster.MIN_BYTES) is not small and started == ["bed", "bed"]  # type: ignore[arg-type]


def test_own_master_is_off_with_the_switch_or_without_ssh(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*a: object, **k: object) -> None:
        raise AssertionError("no login may be tried")

    monkeypatch.setattr(ownmaster, "start_master", never)
    monkeypatch.setenv(mux.OFF_ENV, "0")
    assert mux.own_master(_SshLike(), SshSettings(host="bed")) is None  # type: ignore[arg-type]
    monkeypatch.delenv(mux.OFF_ENV)
    monkeypatch.setattr(mux, "ssh_binary", lambda: None)
    assert mux.own_master(_SshLike(), SshSettings(host="bed")) is None  # type: ignore[arg-type]


def test_a_lost_own_master_is_exit_3_named_as_aifactorys_own(fake_ssh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aifactory_cli.errors import RemoteError

    monkeypatch.setenv("FAKE_LOGIN_ERR", "Control socket connect(/tmp/aif-ssh-x/m): Connection refused")
    runner = mux.OpenSshMux(mux.MuxRoute(str(fake_ssh), "/tmp/aif-ssh-x/m", "bed"), site="bed", own=True)
    with pytest.raises(RemoteError) as err:
        runner.run("cat big.bin")
    assert err.value.exit_code == 3
    assert err.value.message.startswith("aifactory's own OpenSSH master did not run a command (Control socket")
    assert "nothing ran on the site: cat big.bin" in err.value.message
