"""Where to connect (pure: the profile's `ssh:` settings + ~/.ssh/config, no network).

`resolve_ssh` turns the settings into an `SshRoute`: the login node and the jump hosts in front of
it, each an `Endpoint` with its host name, port, user, identity files and known_hosts files.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aifactory_cli import settings as app_settings
from aifactory_cli.errors import ConfigError, ProfileError

if TYPE_CHECKING:
    import paramiko

    from aifactory_cli.transport.ssh.settings import SshSettings

SSH_CONFIG_ENV = app_settings.SSH_CONFIG
DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
MAX_JUMP_DEPTH = 8
JUMP_HINT = "write ProxyJump as [user@]host[:port], several hops separated by commas"


@dataclass(frozen=True)
class Endpoint:
    """One SSH server to log in to (the login node or a jump host), fully resolved."""

    alias: str  # what the profile / ProxyJump / command line said
    hostname: str  # what is dialled
    port: int
    user: str
    identity_files: tuple[str, ...] = ()  # expanded paths, in order
    known_hosts_files: tuple[str, ...] = ()
    identities_only: bool = False
    host_key_alias: str | None = None  # ssh_config HostKeyAlias: the known_hosts name to use

    @property
    def address(self) -> str:
        return f"{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name under which known_hosts stores this server's key (`host` or `[host]:port`)."""
        name = self.host_key_alias or self.hostname
        return name if self.port == 22 else f"[{name}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


@dataclass(frozen=True)
class SshRoute:
    """The login node plus the jump hosts in front of it (first hop first)."""

    target: Endpoint
    jumps: tuple[Endpoint, ...] = field(default_factory=tuple)
    pins: tuple[str, ...] = ()  # SHA256 fingerprints of the target's host keys, without '='

    def describe(self) -> str:
        return " -> ".join(str(e) for e in (*self.jumps, self.target))


def ssh_config_path() -> Path:
    """`$AIFACTORY_SSH_CONFIG`, else ~/.ssh/config."""
    return app_settings.current().ssh_config_file()


def load_ssh_config(path: Path | None = None) -> paramiko.SSHConfig:
    import paramiko

    path = path if path is not None else ssh_config_path()
    if not path.is_file():
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(path))
    except (paramiko.SSHException, OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the ssh config {path}: {exc}", f"fix the file or point {SSH_CONFIG_ENV} at another one"
        ) from exc


def parse_jump_spec(spec: str) -> tuple[str | None, str, int | None]:
    """`[ssh://][user@]host[:port]` (IPv6 as `[addr]:port`) -> (user, host, port)."""
    text = spec.strip()
    if text.startswith("ssh://"):
        text = text[len("ssh://") :].rstrip("/")
    user: str | None = None
    if "@" in text:
        user, text = text.rsplit("@", 1)
        user = user or None
    port: int | None = None
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text)
    if m:
        host, port_text = m.group(1), m.group(2)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"bad port in ProxyJump entry '{spec}'", JUMP_HINT)
        port = int(port_text)
    if not host:
        raise ConfigError(f"empty host in ProxyJump entry '{spec}'", JUMP_HINT)
    return user, host, port


def expand(path: str) -> str:
    return os.path.expandvars(os.path.expanduser(path))


def _local_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry
        return "root"


def _known_hosts_from(options: dict[str, Any], explicit: str | None) -> tuple[str, ...]:
    if explicit:
        return (expand(explicit),)
    user_files = options.get("userknownhostsfile")
    global_files = options.get("globalknownhostsfile")
    files = [expand(p) for p in (user_files.split() if user_files else DEFAULT_KNOWN_HOSTS)]
    files += [expand(p) for p in (global_files.split() if global_files else DEFAULT_GLOBAL_KNOWN_HOSTS)]
    return tuple(f for f in files if f != "/dev/null")


def _endpoint(
    alias: str,
    options: dict[str, Any],
    *,
    user: str | None,
    port: int | None,
    identity_files: list[str],
    known_hosts: str | None,
    fallback_user: str,
) -> Endpoint:
    config_port = options.get("port")
    return Endpoint(
        alias=alias,
        hostname=options.get("hostname") or alias,
        port=port or (int(config_port) if config_port else 22),
        user=user or options.get("user") or fallback_user,
        identity_files=tuple(dict.fromkeys(identity_files)),
        known_hosts_files=_known_hosts_from(options, known_hosts),
        identities_only=str(options.get("identitiesonly", "no")).lower() == "yes",
        host_key_alias=options.get("hostkeyalias"),
    )


def resolve_ssh(settings: SshSettings, config: paramiko.SSHConfig | None = None) -> SshRoute:
    """The route to the site's login node from the profile's `ssh:` block and ssh_config.

    `settings.host` may be an ssh_config alias: HostName, Port, User, IdentityFile, ProxyJump,
    UserKnownHostsFile and HostKeyAlias come from it. Anything set explicitly in the profile wins.
    Jump hosts are looked up in ssh_config too; they use the profile's identity file and
    known_hosts when their own entry has none, and the login node's user unless one is given.
    """
    if not settings.host:
        raise ProfileError("the profile has no ssh.host", "set ssh.host (a host name or an ~/.ssh/config alias)")
    config = config if config is not None else load_ssh_config()
    options = config.lookup(settings.host)
    explicit_ids = [expand(settings.identity_file)] if settings.identity_file else []
    config_ids = [expand(p) for p in options.get("identityfile", [])]
    target = _endpoint(
        settings.host,
        options,
        user=settings.user,
        port=settings.port,
        identity_files=explicit_ids or config_ids,
        known_hosts=settings.known_hosts,
        fallback_user=_local_user(),
    )
    jump_spec = settings.proxy_jump if settings.proxy_jump is not None else options.get("proxyjump")
    jumps = _resolve_jumps(jump_spec, config, settings, target.user, depth=0)
    pins = tuple(fp.rstrip("=") for fp in settings.host_key_fingerprints)
    return SshRoute(target=target, jumps=tuple(jumps), pins=pins)


def _resolve_jumps(
    spec: str | None, config: paramiko.SSHConfig, settings: SshSettings, default_user: str, depth: int
) -> list[Endpoint]:
    if not spec or spec.strip().lower() == "none":
        return []
    if depth > MAX_JUMP_DEPTH:
        raise ConfigError(f"ProxyJump chain longer than {MAX_JUMP_DEPTH} hops (a loop in ssh_config?)")
    hops: list[Endpoint] = []
    for i, part in enumerate(p for p in spec.split(",") if p.strip()):
        user, host, port = parse_jump_spec(part)
        options = config.lookup(host)
        ids = [expand(p) for p in options.get("identityfile", [])]
        if settings.identity_file:
            ids.append(expand(settings.identity_file))
        known = None if options.get("userknownhostsfile") else settings.known_hosts
        hop = _endpoint(
            host, options, user=user, port=port, identity_files=ids, known_hosts=known, fallback_user=default_user
        )
        if i == 0:
            # like OpenSSH: the first hop's own ProxyJump is honoured (later hops go through it)
            hops += _resolve_jumps(options.get("proxyjump"), config, settings, hop.user, depth + 1)
        hops.append(hop)
    return hops
