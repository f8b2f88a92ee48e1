"""Where the SSH transport connects: profile `ssh:` settings + ssh_config, and host key checks.
Pure logic, no server."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from aifactory_cli.errors import ConfigError, HostKeyError, ProfileError
from aifactory_cli.transport.ssh.config import (
    Endpoint,
    load_ssh_config,
    parse_jump_spec,
    resolve_ssh,
    ssh_config_path,
)
from aifactory_cli.transport.ssh.connection import remote_path
from aifactory_cli.transport.ssh.hostkeys import check_host_key, fingerprint, load_known_hosts
from aifactory_cli.transport.ssh.settings import SshSettings

SSH_CONFIG = """\
Host lumi
    HostName lumi.csc.fi
    User alice
    Port 2200
    IdentityFile ~/.ssh/id_lumi
    UserKnownHostsFile ~/.ssh/kh_lumi /etc/kh_extra
    ProxyJump bastion

Host bastion
    HostName bastion.example.org
    User bob
    Port 2022
    IdentityFile /keys/bastion

Host inner
    HostName 10.0.0.5
    ProxyJump bastion,carol@hop2:2201

Host chained
    HostName target.internal
    ProxyJump middle

Host middle
    HostName middle.internal
    ProxyJump bastion

Host loop1
    ProxyJump loop2
Host loop2
    ProxyJump loop1

Host plain
    HostName plain.example.org
    HostKeyAlias plain-alias

Host *
    IdentitiesOnly yes
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> paramiko.SSHConfig:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("USER", "localme")
    path = tmp_path / "ssh_config"
    path.write_text(SSH_CONFIG)
    monkeypatch.setenv("AIFACTORY_SSH_CONFIG", str(path))
    return load_ssh_config()


def home(tmp_path: Path, rest: str) -> str:
    return str(tmp_path / "home" / rest)


def test_alias_takes_everything_from_ssh_config(config: paramiko.SSHConfig, tmp_path: Path) -> None:
    route = resolve_ssh(SshSettings(host="lumi"), config)
    t = route.target
    assert (t.alias, t.hostname, t.port, t.user) == ("lumi", "lumi.csc.fi", 2200, "alice")
    assert t.identity_files == (home(tmp_path, ".ssh/id_lumi"),)
    assert t.known_hosts_files[:2] == (home(tmp_path, ".ssh/kh_lumi"), "/etc/kh_extra")
    assert t.known_hosts_name == "[lumi.csc.fi]:2200"
    assert t.identities_only
    # the jump host is an alias too; it keeps its own user, port and key
    assert len(route.jumps) == 1
    j = route.jumps[0]
    assert (j.hostname, j.port, j.user) == ("bastion.example.org", 2022, "bob")
    assert j.identity_files == ("/keys/bastion",)
    assert route.describe() == "bob@bastion.example.org:2022 -> alice@lumi.csc.fi:2200"


def test_explicit_settings_win_over_ssh_config(config: paramiko.SSHConfig, tmp_path: Path) -> None:
    settings = SshSettings(
        host="lumi",
        port=22,
        user="zed",
        identity_file="~/k/id_x",
        known_hosts="~/kh",
        proxy_jump="none",
        host_key_fingerprints=["SHA256:" + "A" * 43],
    )
    route = resolve_ssh(settings, config)
    t = route.target
    # user wins (as `ssh -l`); the profile's port is only a default: ssh_config's Port 2200 wins
    assert (t.hostname, t.port, t.user) == ("lumi.csc.fi", 2200, "zed")
    # the explicit key first (as `ssh -i`), then the one ssh_config names
    assert t.identity_files == (home(tmp_path, "k/id_x"), home(tmp_path, ".ssh/id_lumi"))
    assert t.known_hosts_files == (home(tmp_path, "kh"),)  # only the explicit file
    assert t.known_hosts_name == "[lumi.csc.fi]:2200"
    elsewhere = settings.model_copy(update={"host": "elsewhere.example.org", "port": 8822})
    assert resolve_ssh(elsewhere, config).target.port == 8822  # no Port in ssh_config: the profile's
    assert route.jumps == ()  # "none" switches ProxyJump off
    assert route.pins == ("SHA256:" + "A" * 43,)


def test_profile_proxy_jump_replaces_the_config_one(config: paramiko.SSHConfig) -> None:
    route = resolve_ssh(SshSettings(host="lumi", proxy_jump="eve@jump.example.org:2222"), config)
    assert [(j.user, j.hostname, j.port) for j in route.jumps] == [("eve", "jump.example.org", 2222)]


def test_unknown_host_is_used_as_is(config: paramiko.SSHConfig, tmp_path: Path) -> None:
    route = resolve_ssh(SshSettings(host="login.example.org"), config)
    t = route.target
    assert (t.hostname, t.port, t.user) == ("login.example.org", 22, "localme")
    assert t.identity_files == ()  # none configured: default keys are looked for at login
    assert t.known_hosts_files[0] == home(tmp_path, ".ssh/known_hosts")
    assert "/etc/ssh/ssh_known_hosts" in t.known_hosts_files
    assert route.jumps == ()


def test_multi_hop_jump_with_inline_user_and_port(config: paramiko.SSHConfig) -> None:
    route = resolve_ssh(SshSettings(host="inner", user="me", identity_file="/keys/site"), config)
    assert [(j.user, j.hostname, j.port) for j in route.jumps] == [
        ("bob", "bastion.example.org", 2022),  # the alias' own User
        ("carol", "hop2", 2201),  # inline user@host:port
    ]
    # hops fall back to the profile's key after their own
    assert route.jumps[0].identity_files == ("/keys/bastion", "/keys/site")
    assert route.jumps[1].identity_files == ("/keys/site",)
    assert route.target.hostname == "10.0.0.5"


def test_first_hops_own_proxy_jump_is_followed(config: paramiko.SSHConfig) -> None:
    route = resolve_ssh(SshSettings(host="chained"), config)
    assert [j.hostname for j in route.jumps] == ["bastion.example.org", "middle.internal"]


def test_proxy_jump_loop_is_an_error(config: paramiko.SSHConfig) -> None:
    with pytest.raises(ConfigError, match="loop"):
        resolve_ssh(SshSettings(host="loop1"), config)


def test_host_key_alias(config: paramiko.SSHConfig) -> None:
    route = resolve_ssh(SshSettings(host="plain", port=2222), config)
    # OpenSSH looks the alias up as it is, not as [alias]:port (it was reported as a changed key)
    assert route.target.known_hosts_name == "plain-alias"


def test_no_host_is_a_profile_error(config: paramiko.SSHConfig) -> None:
    with pytest.raises(ProfileError):
        resolve_ssh(SshSettings(), config)


def test_missing_ssh_config_is_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIFACTORY_SSH_CONFIG", str(tmp_path / "nope"))
    assert ssh_config_path() == tmp_path / "nope"
    route = resolve_ssh(SshSettings(host="h.example.org", user="u"))
    assert (route.target.hostname, route.target.port) == ("h.example.org", 22)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("host", (None, "host", None)),
        ("u@host", ("u", "host", None)),
        ("u@host:2222", ("u", "host", 2222)),
        ("ssh://u@host:2222", ("u", "host", 2222)),
        ("[::1]:2200", (None, "::1", 2200)),
        ("u@[fe80::1]", ("u", "fe80::1", None)),
    ],
)
def test_parse_jump_spec(spec: str, expected: tuple[str | None, str, int | None]) -> None:
    assert parse_jump_spec(spec) == expected


@pytest.mark.parametrize("spec", ["host:abc", "u@:22", "host:0"])
def test_parse_jump_spec_rejects(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_jump_spec(spec)


def test_remote_path() -> None:
    assert remote_path("~/a/b") == "a/b"
    assert remote_path("$HOME/a") == "a"
    assert remote_path("/abs/x") == "/abs/x"
    assert remote_path("rel/x") == "rel/x"


# --- host keys --------------------------------------------------------------------------------------


def _key() -> paramiko.PKey:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    import io

    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode()))


def _known(tmp_path: Path, lines: list[str]) -> tuple[Endpoint, list[tuple[str, paramiko.HostKeys]]]:
    path = tmp_path / "known_hosts"
    path.write_text("".join(line + "\n" for line in lines))
    ep = Endpoint(alias="h", hostname="h.example.org", port=2222, user="u", known_hosts_files=(str(path),))
    return ep, load_known_hosts(ep.known_hosts_files)


def test_with_a_host_key_alias_the_key_is_looked_up_and_added_under_the_alias(tmp_path: Path) -> None:
    key = _key()
    path = tmp_path / "known_hosts"
    path.write_text(f"loginalias {key.get_name()} {key.get_base64()}\n")
    ep = Endpoint(
        alias="h", hostname="h.example.org", port=2222, user="u", known_hosts_files=(str(path),),
        host_key_alias="loginalias",
    )  # fmt: skip
    known = load_known_hosts(ep.known_hosts_files)
    assert check_host_key(ep, key.get_name(), key.asbytes(), known) == str(path)
    path.write_text("")
    with pytest.raises(HostKeyError) as info:
        check_host_key(ep, key.get_name(), key.asbytes(), load_known_hosts(ep.known_hosts_files))
    assert "sed 's/^[^ ]*/loginalias/'" in (info.value.hint or "")


def test_fingerprint_matches_paramiko() -> None:
    key = _key()
    assert fingerprint(key.asbytes()) == key.fingerprint


def test_known_key_is_accepted(tmp_path: Path) -> None:
    key = _key()
    ep, known = _known(tmp_path, [f"[h.example.org]:2222 {key.get_name()} {key.get_base64()}"])
    assert check_host_key(ep, key.get_name(), key.asbytes(), known) == ep.known_hosts_files[0]


def test_unknown_key_is_refused_with_keyscan_hint(tmp_path: Path) -> None:
    key = _key()
    ep, known = _known(tmp_path, [])
    with pytest.raises(HostKeyError) as info:
        check_host_key(ep, key.get_name(), key.asbytes(), known)
    assert "h.example.org:2222" in info.value.message
    assert fingerprint(key.asbytes()) in info.value.message
    assert "ssh-keyscan -p 2222 h.example.org" in (info.value.hint or "")


def test_changed_key_is_refused(tmp_path: Path) -> None:
    old, new = _key(), _key()
    ep, known = _known(tmp_path, [f"[h.example.org]:2222 {old.get_name()} {old.get_base64()}"])
    with pytest.raises(HostKeyError, match="CHANGED"):
        check_host_key(ep, new.get_name(), new.asbytes(), known)


def test_pinned_key_is_accepted_without_known_hosts(tmp_path: Path) -> None:
    key = _key()
    ep, known = _known(tmp_path, [])
    pins = (fingerprint(key.asbytes()),)
    assert check_host_key(ep, key.get_name(), key.asbytes(), known, pins) == "pinned"


def test_key_matching_neither_pins_nor_known_hosts_is_refused(tmp_path: Path) -> None:
    key, other = _key(), _key()
    ep, known = _known(tmp_path, [])
    with pytest.raises(HostKeyError, match="pinned"):
        check_host_key(ep, key.get_name(), key.asbytes(), known, (fingerprint(other.asbytes()),))
    # known_hosts still counts when pins are given
    ep, known = _known(tmp_path, [f"[h.example.org]:2222 {key.get_name()} {key.get_base64()}"])
    check_host_key(ep, key.get_name(), key.asbytes(), known, (fingerprint(other.asbytes()),))


def test_hashed_known_hosts_entry(tmp_path: Path) -> None:
    key = _key()
    hashed = paramiko.HostKeys.hash_host("[h.example.org]:2222")
    ep, known = _known(tmp_path, [f"{hashed} {key.get_name()} {key.get_base64()}"])
    check_host_key(ep, key.get_name(), key.asbytes(), known)


def test_a_profile_extending_a_built_in_one_keeps_the_ssh_config_port(config: paramiko.SSHConfig) -> None:
    # `extends: lumi` with `ssh: {host: lumi}` (an ssh_config alias with Port 2200): the built-in
    # profile brings no port of its own, so the user's ssh_config decides
    from aifactory_cli.sites.profile import load_profile

    built_in = load_profile("lumi").profile.ssh
    assert built_in.port is None
    route = resolve_ssh(built_in.model_copy(update={"host": "lumi", "host_key_fingerprints": []}), config)
    assert route.target.port == 2200
