"""ssh_config resolved as OpenSSH does (`ssh -G`, the local client, no network): Include, Match
user with aifactory's login name, tokens, HostKeyAlias, CertificateFile, IdentityAgent,
ProxyCommand, ConnectTimeout, NumberOfPasswordPrompts; the paramiko fallback says once what it
cannot honour. Keys: certificates paired with their key, an encrypted key's public half, retries
of a keyboard-interactive prompt."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import paramiko
import pytest

from aifactory_cli.errors import AuthError, ConfigError
from aifactory_cli.transport.ssh import openssh
from aifactory_cli.transport.ssh.auth import Authenticator, _certifies, _public_blob
from aifactory_cli.transport.ssh.config import Endpoint, resolve_ssh
from aifactory_cli.transport.ssh.settings import SshSettings

needs_ssh = pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client")


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    inc = tmp_path / "snippet.conf"
    inc.write_text("Host included\n    HostName 10.1.1.1\n    User incuser\n    Port 2201\n")
    path = tmp_path / "ssh_config"
    path.write_text(
        f"Include {inc}\n"
        "Match user bob\n"
        "    Port 2299\n"
        "Host pc\n"
        "    HostName 127.0.0.1\n"
        "    ProxyCommand nc -q0 %h %p # via %r\n"
        f"    UserKnownHostsFile {tmp_path}/kh_%h_%p_%r\n"
        "    HostKeyAlias pc-key\n"
        "    CertificateFile ~/c-%r.pub\n"
        f"    IdentityAgent {tmp_path}/agent.%r\n"
        "    IdentityFile ~/.ssh/id_%r\n"
        "    ConnectTimeout 7\n"
        "    NumberOfPasswordPrompts 5\n"
        "Host viajump\n"
        "    HostName 10.2.2.2\n"
        "    ProxyJump included,plainjump\n"
        "    ProxyCommand nc %h %p\n"
    )
    monkeypatch.setenv("AIFACTORY_SSH_CONFIG", str(path))
    return path


@needs_ssh
def test_include_and_match_user_with_the_login_name(cfg: Path) -> None:
    route = resolve_ssh(SshSettings(host="included"))
    t = route.target
    assert route.resolver == "ssh -G"
    assert (t.hostname, t.port, t.user) == ("10.1.1.1", 2201, "incuser")  # from the Include'd file
    # aifactory's login name is passed as `ssh -l`: `Match user bob` sees it (not the local user)
    assert resolve_ssh(SshSettings(host="somewhere", user="bob")).target.port == 2299
    assert resolve_ssh(SshSettings(host="somewhere", user="alice")).target.port == 22
    # a profile's port is a default: ssh_config's Port (here from `Match user bob`) wins ...
    assert resolve_ssh(SshSettings(host="somewhere", user="bob", port=2000)).target.port == 2299
    assert resolve_ssh(SshSettings(host="included", port=8822)).target.port == 2201
    # ... and where ssh_config sets none, it acts as `ssh -p` (tokens such as %p see it)
    pc = resolve_ssh(SshSettings(host="pc", user="carol", port=8822)).target
    assert pc.port == 8822 and any(f.endswith("kh_127.0.0.1_8822_carol") for f in pc.known_hosts_files)


@needs_ssh
def test_tokens_alias_certificate_agent_proxy_command(cfg: Path, tmp_path: Path) -> None:
    route = resolve_ssh(SshSettings(host="pc", user="bob"))
    t = route.target
    home = tmp_path / "home"
    assert (t.hostname, t.port, t.user) == ("127.0.0.1", 2299, "bob")
    assert t.known_hosts_files[0] == f"{tmp_path}/kh_127.0.0.1_2299_bob"  # tokens expanded (by ssh -G)
    assert t.known_hosts_name == "pc-key"  # HostKeyAlias as it is, not [pc-key]:2299
    assert t.certificate_files == (f"{home}/c-bob.pub",)
    assert t.identity_files == (f"{home}/.ssh/id_bob",)
    assert t.identity_agent == f"{tmp_path}/agent.bob"
    assert t.proxy_command == "nc -q0 127.0.0.1 2299 # via bob"
    assert t.password_prompts == 5
    assert route.connect_timeout == 7.0
    # a connect_timeout the profile sets wins over ConnectTimeout
    assert resolve_ssh(SshSettings(host="pc", user="bob", connect_timeout=3)).connect_timeout == 3.0


@needs_ssh
def test_defaults_mean_no_configured_identity_and_the_environments_agent(cfg: Path) -> None:
    t = resolve_ssh(SshSettings(host="elsewhere.example.org", user="u")).target
    assert t.identity_files == ()  # OpenSSH's default list: the login code looks for them itself
    assert t.identity_agent is None and t.proxy_command is None and t.password_prompts == 3
    assert t.known_hosts_name == "elsewhere.example.org"


@needs_ssh
def test_proxy_jump_wins_over_proxy_command_and_jumps_take_the_login_user(cfg: Path) -> None:
    route = resolve_ssh(SshSettings(host="viajump", user="me"))
    hops = [(j.hostname, j.port, j.user) for j in route.jumps]
    assert hops == [("10.1.1.1", 2201, "incuser"), ("plainjump", 22, "me")]
    assert route.target.proxy_command is None
    # a ProxyJump in the profile replaces ssh_config's ProxyJump and ProxyCommand (as `ssh -J`)
    route = resolve_ssh(SshSettings(host="pc", user="bob", proxy_jump="none"))
    assert route.jumps == () and route.target.proxy_command is None


@pytest.mark.parametrize("resolver", ["ssh -G", "paramiko"])
def test_a_user_that_would_reach_the_proxy_commands_shell_is_refused(
    cfg: Path, resolver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if resolver == "paramiko":
        monkeypatch.setattr(openssh, "ssh_binary", lambda: None)
    elif shutil.which("ssh") is None:
        pytest.skip("no OpenSSH client")
    # OpenSSH refuses such a user itself; the paramiko path checks before expanding %r
    with pytest.raises(ConfigError, match=r"ProxyCommand|invalid characters"):
        resolve_ssh(SshSettings(host="pc", user="x$(touch /tmp/pwned)"))


@needs_ssh
def test_a_config_openssh_refuses_is_a_config_error(cfg: Path) -> None:
    cfg.write_text("Host x\n    NoSuchOption yes\n")
    with pytest.raises(ConfigError, match=r"NoSuchOption|[Bb]ad configuration"):
        resolve_ssh(SshSettings(host="x"))


@needs_ssh
def test_one_resolution_is_fast(cfg: Path) -> None:
    resolve_ssh(SshSettings(host="pc", user="bob"))
    started = time.perf_counter()
    for _ in range(10):
        resolve_ssh(SshSettings(host="pc", user="bob"))
    per_call = (time.perf_counter() - started) / 10
    print(f"\nresolve_ssh via ssh -G: {per_call * 1000:.1f} ms")
    assert per_call < 0.2


def test_without_ssh_paramiko_reads_the_file_and_says_once_what_it_cannot(
    cfg: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(openssh, "ssh_binary", lambda: None)
    monkeypatch.setattr(openssh, "_noted", set())
    route = resolve_ssh(SshSettings(host="pc", user="bob"))
    resolve_ssh(SshSettings(host="pc", user="bob"))
    assert route.resolver == "paramiko"
    assert route.target.hostname == "127.0.0.1"
    assert route.target.known_hosts_name == "pc-key"
    err = capsys.readouterr().err
    assert err.count("no OpenSSH client") == 1 and "Include" in err


def test_an_ssh_without_minus_g_takes_the_paramiko_path(
    cfg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old_ssh = tmp_path / "ssh"
    old_ssh.write_text(
        "#!/bin/sh\necho 'unknown option -- G' >&2\necho 'usage: ssh [-1246AaCfgKkMNnqsTtVvXxYy]' >&2\nexit 255\n"
    )
    old_ssh.chmod(0o755)
    monkeypatch.setattr(openssh, "ssh_binary", lambda: str(old_ssh))
    monkeypatch.setattr(openssh, "_noted", set())
    route = resolve_ssh(SshSettings(host="pc", user="bob"))
    assert route.resolver == "paramiko" and route.target.hostname == "127.0.0.1"
    assert "no OpenSSH client with `ssh -G`" in capsys.readouterr().err


# --- keys ---------------------------------------------------------------------------------------------


def _keygen(path: Path, *extra: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path), *extra], check=True)
    return path


def test_a_certificate_is_paired_with_its_key_only(tmp_path: Path) -> None:
    key, other, ca = _keygen(tmp_path / "k"), _keygen(tmp_path / "o"), _keygen(tmp_path / "ca")
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "id", "-n", "u", str(key) + ".pub"], check=True)
    cert = tmp_path / "k-cert.pub"
    cert_blob = paramiko.PublicBlob.from_file(str(cert)).key_blob
    k = paramiko.PKey.from_path(str(key))
    k.public_blob = None
    o = paramiko.PKey.from_path(str(other))
    assert _certifies(cert_blob, k.asbytes()) and not _certifies(cert_blob, o.asbytes())
    hop = Endpoint(alias="h", hostname="h", port=22, user="u", certificate_files=(str(cert), str(tmp_path / "nope")))
    auth = Authenticator(None, hop, False, "site")  # type: ignore[arg-type]  # only the key logic is used
    out = auth._certified([("other", o), ("key", k)])
    assert [label for label, _ in out] == ["other", f"key + certificate {cert}", "key"]
    assert out[1][1].public_blob is not None and out[2][1].public_blob is None
    assert any("nope" in n for n in auth.notes)


def test_an_encrypted_key_without_pub_still_has_its_public_half(tmp_path: Path) -> None:
    key = _keygen(tmp_path / "locked", "-N", "s3cret")
    pub = (tmp_path / "locked.pub").read_text().split()[1]
    (tmp_path / "locked.pub").unlink()
    import base64

    assert _public_blob(str(key)) == base64.b64decode(pub)  # matched against the agent's copy


class _KbdTransport:
    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.calls = 0

    def auth_interactive(self, user: str, handler: Any) -> list[str]:
        self.calls += 1
        if self.calls <= self.fail:
            raise paramiko.AuthenticationException("wrong code")
        return []

    def is_active(self) -> bool:
        return True

    def is_authenticated(self) -> bool:
        return self.calls > self.fail


def test_a_mistyped_code_gets_number_of_password_prompts_tries(capsys: pytest.CaptureFixture[str]) -> None:
    hop = Endpoint(alias="h", hostname="h", port=22, user="u", password_prompts=3)
    t = _KbdTransport(fail=2)
    Authenticator(t, hop, True, "site")._keyboard_interactive()  # type: ignore[arg-type]
    assert t.calls == 3 and t.is_authenticated()
    t = _KbdTransport(fail=5)
    auth = Authenticator(t, hop, True, "site")  # type: ignore[arg-type]
    auth._keyboard_interactive()
    assert t.calls == 3 and auth.prompts_refused == 3
    t = _KbdTransport(fail=5)
    Authenticator(t, hop, False, "site")._keyboard_interactive()  # type: ignore[arg-type]
    assert t.calls == 1  # no terminal: no retry


def test_a_refused_code_after_an_accepted_key_does_not_blame_the_key() -> None:
    class T(_KbdTransport):
        def auth_none(self, user: str) -> None:
            raise paramiko.BadAuthenticationType("x", ["publickey"])

    hop = Endpoint(alias="h", hostname="h", port=22, user="u", password_prompts=2)
    auth = Authenticator(T(fail=9), hop, True, "site")  # type: ignore[arg-type]
    auth._publickeys = lambda allowed: (setattr(auth, "partial", True), ["keyboard-interactive"])[1]  # type: ignore[method-assign]
    with pytest.raises(AuthError, match=r"accepted the key .* refused the answer") as info:
        auth.run()
    assert "2 time(s)" in info.value.message
