"""The OpenSSH fast path (transport/ssh/mux.py): when it is chosen, the `ssh` command line it builds,
and how it moves bytes and fails. The `ssh` here is a fake script that runs the remote command
locally in bash (after a banner, as a chatty login shell would), so the pipes are real."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
from pathlib import Path

import pytest

from aifactory_cli.backends import fetching
from aifactory_cli.backends.datastore import DataStore
from aifactory_cli.errors import RemoteError
from aifactory_cli.jobs import datastore as ds
from aifactory_cli.jobs.model import Job
from aifactory_cli.transport import LocalFile
from aifactory_cli.transport.ssh import mux
from aifactory_cli.transport.ssh.openssh import HostOptions
from aifactory_cli.transport.ssh.settings import SshSettings
from tests.unit.fakes import FakeTransport

FAKE_SSH = """#!/bin/bash
for a in "$@"; do last=$a; done
printf '%s\\n' "$@" > "$FAKE_ARGV"
if [ -n "$FAKE_STDIN" ]; then readlink "/proc/$$/fd/0" > "$FAKE_STDIN"; fi
case " $* " in *" -O check "*) exit "${FAKE_CHECK_RC:-0}";; esac
printf 'Welcome to the cluster\\n'; printf 'a banner on stderr\\n' >&2
if [ -n "$FAKE_DIE_OUT" ]; then
  bash -c "$last" | head -c "$FAKE_DIE_OUT"; echo 'mux_client: master gone' >&2; exit 255
fi
if [ -n "$FAKE_DIE_IN" ]; then head -c "$FAKE_DIE_IN" | bash -c "$last"; exit 255; fi
exec bash -c "$last"
"""


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    binary = tmp_path / "bin" / "ssh"
    binary.parent.mkdir()
    binary.write_text(FAKE_SSH)
    binary.chmod(0o755)
    monkeypatch.setenv("FAKE_ARGV", str(tmp_path / "argv"))
    for var in ("FAKE_CHECK_RC", "FAKE_DIE_OUT", "FAKE_DIE_IN", "FAKE_STDIN", mux.OFF_ENV):
        monkeypatch.delenv(var, raising=False)
    return binary


def _route(binary: Path, tmp_path: Path) -> mux.MuxRoute:
    return mux.MuxRoute(str(binary), str(tmp_path / "cm-abc"), "login.example", None, user="me", port=2222)


def _options(**values: str) -> HostOptions:
    return HostOptions({k: [v] for k, v in values.items()}, "ssh -G")


# --- when ------------------------------------------------------------------------------------------


def test_route_needs_a_controlpath_whose_socket_exists_and_host_keys_checked(tmp_path: Path) -> None:
    sock = tmp_path / "cm-1"
    settings = SshSettings(host="login.example")
    ok = _options(controlpath=str(sock), user="me", port="22", stricthostkeychecking="ask")
    assert mux.route_for(settings, ok, "ssh", None) is None  # no socket there: no master
    sock.write_text("")
    route = mux.route_for(settings, ok, "ssh", None)
    assert route == mux.MuxRoute("ssh", str(sock), "login.example", None, user="me", port=22)
    assert mux.route_for(settings, _options(user="me"), "ssh", None) is None  # no ControlPath
    assert mux.route_for(settings, _options(controlpath="none"), "ssh", None) is None
    assert mux.route_for(settings, _options(controlpath=str(sock), stricthostkeychecking="no"), "ssh", None) is None
    pinned = SshSettings(host="login.example", host_key_fingerprints=["SHA256:" + "A" * 43])
    assert mux.route_for(pinned, ok, "ssh", None) is None  # OpenSSH cannot check aifactory's pins
    read_by_paramiko = HostOptions(ok.values, "paramiko")
    assert mux.route_for(settings, read_by_paramiko, "ssh", None) is None


def test_find_master_asks_ssh_O_check_and_honours_the_switch(
    fake_ssh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("ssh") is None:
        pytest.skip("no OpenSSH client for ssh -G")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host bed\n  HostName 127.0.0.1\n  User me\n  ControlPath {tmp_path}/cm-%C\n")
    monkeypatch.setenv("AIFACTORY_SSH_CONFIG", str(cfg))
    monkeypatch.setattr(mux, "ssh_binary", lambda: str(fake_ssh))
    settings = SshSettings(host="bed")
    assert mux.find_master(settings) is None  # the socket is not there
    from aifactory_cli.transport.ssh.config import target_options

    path = target_options(settings).get("controlpath")  # as ssh -G expands it
    assert path is not None and path.startswith(f"{tmp_path}/cm-") and "%" not in path
    Path(path).write_text("")
    route = mux.find_master(settings)
    assert route is not None and route.control_path == path and route.user == "me"
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv == [
        "-F",
        str(cfg),
        "-S",
        path,
        "-o",
        "BatchMode=yes",
        *("-l", "me", "-p", "22", "-O", "check"),
        "--",
        "bed",
    ]
    monkeypatch.setenv("FAKE_CHECK_RC", "255")  # "Control socket connect: Connection refused"
    assert mux.find_master(settings) is None
    monkeypatch.delenv("FAKE_CHECK_RC")
    monkeypatch.setenv(mux.OFF_ENV, "0")
    assert mux.find_master(settings) is None
    monkeypatch.setattr(mux, "ssh_binary", lambda: None)
    monkeypatch.delenv(mux.OFF_ENV)
    assert mux.find_master(settings) is None


class _SshLike:
    name = "ssh"
    site = "bed"

    def __init__(self) -> None:
        self.settings = SshSettings(host="bed")


def test_bulk_transport_answers_only_ssh_transports_and_asks_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeTransport(tmp_path)
    assert mux.bulk_transport(fake) is fake  # type: ignore[arg-type]
    calls: list[str | None] = []
    route = mux.MuxRoute("ssh", "/tmp/cm-x", "bed")
    monkeypatch.setattr(mux, "find_master", lambda s: calls.append(s.host) or route)
    ssh = _SshLike()
    first = mux.bulk_transport(ssh)  # type: ignore[arg-type]
    assert isinstance(first, mux.OpenSshMux) and first.route is route
    assert mux.bulk_via(first) == "the OpenSSH ControlMaster at /tmp/cm-x" and mux.bulk_via(fake) is None
    assert mux.bulk_transport(ssh) is first and calls == ["bed"]  # type: ignore[arg-type]
    other = _SshLike()
    monkeypatch.setattr(mux, "find_master", lambda s: None)
    assert mux.bulk_transport(other) is other  # type: ignore[arg-type]


# --- the command line ------------------------------------------------------------------------------


def test_the_command_goes_to_the_master_as_one_quoted_argument_never_a_login(tmp_path: Path) -> None:
    route = mux.MuxRoute("/usr/bin/ssh", "/run/cm-1", "login.example", tmp_path / "cfg", user="me", port=2222)
    line = shlex.join(["tail", "-c", "+5", "--", "/scratch/my file's.bin"])
    argv = route.command_argv(line)
    assert argv[0] == "/usr/bin/ssh" and argv[-3:] == ["--", "login.example", line]
    opts = argv[1:-3]
    assert opts[opts.index("-S") + 1] == "/run/cm-1"
    pairs = {opts[i + 1] for i, o in enumerate(opts) if o == "-o"}
    assert {"ControlMaster=no", "BatchMode=yes", "ProxyCommand=false", "RequestTTY=no"} <= pairs
    assert not any("StrictHostKeyChecking" in p or "KnownHosts" in p for p in pairs)  # never weakened
    assert {"-T", "-x", "-a"} <= set(opts) and opts[opts.index("-e") + 1] == "none"
    assert opts[opts.index("-F") + 1] == os.devnull  # the config file is not there (as ssh -G is told)
    assert opts[opts.index("-l") + 1] == "me" and opts[opts.index("-p") + 1] == "2222"


# --- moving bytes ----------------------------------------------------------------------------------


def test_run_to_file_cuts_the_banner_counts_progress_and_hashes(fake_ssh: Path, tmp_path: Path) -> None:
    runner = mux.OpenSshMux(_route(fake_ssh, tmp_path), site="bed")
    src = tmp_path / "remote.bin"
    src.write_bytes(os.urandom(5 * 1024 * 1024 + 17))
    local = tmp_path / "got" / "part"
    local.parent.mkdir()
    local.write_bytes(src.read_bytes()[:1000])  # an earlier, cut run
    seen: list[int] = []
    done = runner.run_to_file(
        fetching.large_command(str(src), 1000), local, append=True, digest=True, progress=seen.append
    )
    assert done.rc == 0 and local.read_bytes() == src.read_bytes()
    assert done.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert f"SHA256 {done.sha256}" in done.stderr and "banner" not in done.stderr
    assert sum(seen) == done.written == src.stat().st_size - 1000 and len(seen) > 1
    argv = (tmp_path / "argv").read_text().splitlines()
    assert "ControlMaster=no" in argv and argv[-2] == "login.example"


def test_run_streams_a_local_file_on_stdin_with_progress(
    fake_ssh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is ssh's stdin itself (no byte of it through Python), from the offset on; the
    progress is the file's offset as ssh reads it."""
    monkeypatch.setenv("FAKE_STDIN", str(tmp_path / "stdin"))
    runner = mux.OpenSshMux(_route(fake_ssh, tmp_path), site="bed")
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    seen: list[int] = []
    out = tmp_path / "site.bin"
    result = runner.run(f"cat > {shlex.quote(str(out))}; echo done", stdin=LocalFile(src, 100, seen.append))
    assert result.ok and result.stdout == "done\n" and result.noise_bytes > 0
    assert out.read_bytes() == src.read_bytes()[100:] and sum(seen) == src.stat().st_size - 100
    if Path("/proc/self/fd/0").exists():
        assert (tmp_path / "stdin").read_text().strip() == str(src)
    assert runner.run("exit 7").rc == 7  # a command's own status is passed on


def test_ssh_dying_mid_fetch_is_exit_3_and_the_part_is_kept(
    fake_ssh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = mux.OpenSshMux(_route(fake_ssh, tmp_path), site="bed")
    workdir = tmp_path / "job"
    workdir.mkdir()
    (workdir / "out.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    job = Job("j1", "t", "x", "bed", "COMPLETED", "", "", workdir=str(workdir))
    monkeypatch.setattr(fetching, "LARGE", 1024)
    monkeypatch.setenv("FAKE_DIE_OUT", str(1024 * 1024))
    listed = {"out.bin": fetching.Listed(3 * 1024 * 1024, "1")}
    fake = FakeTransport(tmp_path)
    monkeypatch.setattr(mux, "bulk_transport", lambda t, size=0: runner)
    dest = tmp_path / "dest"
    with pytest.raises(RemoteError) as err:
        fetching.fetch_files(fake, job, ["out.bin"], listed, dest)  # type: ignore[arg-type]
    assert err.value.exit_code == 3
    assert "master gone" in err.value.message and "kept in" in err.value.message, err.value.message
    (part,) = (dest / fetching.PARTIAL).glob("*.part")
    kept = part.stat().st_size
    assert 1000 * 1024 < kept < 1024 * 1024  # what came before ssh died (less the marker line)
    monkeypatch.delenv("FAKE_DIE_OUT")  # the next fetch resumes inside the file
    report = fetching.fetch_files(fake, job, ["out.bin"], listed, dest)  # type: ignore[arg-type]
    assert report.resumed == kept and report.via == runner.via
    assert (dest / "out.bin").read_bytes() == (workdir / "out.bin").read_bytes()


def test_ssh_dying_mid_upload_is_exit_3(fake_ssh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = mux.OpenSshMux(_route(fake_ssh, tmp_path), site="bed")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(ds.LARGE + 10))
    monkeypatch.setenv("FAKE_DIE_IN", str(1024 * 1024))
    with pytest.raises(RemoteError) as err:
        runner.run(f"cat > {shlex.quote(str(tmp_path / 'site.bin'))}", stdin=LocalFile(src))
    assert err.value.exit_code == 3 and "failed while a command was running" in err.value.message
    assert fetching.transfer_failure(err.value)


def test_no_master_any_more_is_said_so_nothing_ran(fake_ssh: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bin" / "ssh"
    bad.write_text("#!/bin/sh\necho 'Connection closed by UNKNOWN port 65535' >&2\nexit 255\n")
    runner = mux.OpenSshMux(_route(bad, tmp_path), site="bed")
    with pytest.raises(RemoteError, match=r"did not run a command.*Connection closed.*nothing ran"):
        runner.run("true")


def test_datastore_sends_large_files_through_the_bulk_runner_and_says_so(
    fake_ssh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = mux.OpenSshMux(_route(fake_ssh, tmp_path), site="bed")
    used: list[str] = []
    real_run = runner.run
    monkeypatch.setattr(runner, "run", lambda c, **kw: used.append(str(c)) or real_run(c, **kw))
    monkeypatch.setattr(mux, "bulk_transport", lambda t, size=0: runner)
    fake = FakeTransport(tmp_path)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(ds.LARGE + 3))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    store = DataStore(fake, "bed")  # type: ignore[arg-type]
    data_dir = str(tmp_path / "store")
    probe = store.probe(data_dir, [digest])
    seen: list[int] = []
    sent = store.send(data_dir, [ds.DataFile(src, "big.bin", src.stat().st_size, digest)], probe, "t", seen.append)
    assert sent.files_sent == 1 and sent.via == runner.via and len(used) == 1
    assert sum(seen) == src.stat().st_size
    assert (Path(probe.absolute) / ds.stored_name(digest)).read_bytes() == src.read_bytes()
