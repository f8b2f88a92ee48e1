"""Where to connect (the profile's `ssh:` settings + the user's ssh_config, no network).

`resolve_ssh` turns the settings into an `SshRoute`: the login node and the jump hosts in front of
it, each an `Endpoint` with its host name, port, user, keys, certificates, agent, proxy command
and known_hosts files. ssh_config is resolved by OpenSSH itself (`ssh -G`, see openssh.py).

Precedence, as for `ssh -l USER -p PORT -i KEY -J JUMP -o UserKnownHostsFile=FILE HOST`: what
aifactory's own settings give (AIFACTORY_SSH_USER, AIFACTORY_SSH_KEY, AIFACTORY_SSH_KNOWN_HOSTS >
config.yaml `sites.S` > the profile's `ssh:`) acts like ssh's command-line options and wins over
ssh_config; everything else comes from ssh_config (with `Include`, `Match`, tokens), then
OpenSSH's defaults. Two exceptions, where the profile only gives a default: its `port` is used
only when ssh_config sets no Port for the host (then as `ssh -p`: `Match` and `%p` see it), and its
`connect_timeout` only when set, else ConnectTimeout, else 15 s. A key given to aifactory is
tried first, then the ones ssh_config names. StrictHostKeyChecking is never weaker than aifactory's policy
(unknown or changed keys are always refused, nothing is added).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from aifactory_cli import settings as app_settings
from aifactory_cli.errors import ConfigError, ProfileError
from aifactory_cli.transport.ssh.openssh import HostOptions, Tokens, local_user, lookup

if TYPE_CHECKING:
    import paramiko

    from aifactory_cli.transport.ssh.settings import SshSettings

SSH_CONFIG_ENV = app_settings.SSH_CONFIG
DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
MAX_JUMP_DEPTH = 8
DEFAULT_CONNECT_TIMEOUT = 15.0  # SshSettings.connect_timeout's default
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
    certificate_files: tuple[str, ...] = ()  # ssh_config CertificateFile, expanded
    identity_agent: str | None = None  # agent socket path; None: $SSH_AUTH_SOCK; "none": no agent
    proxy_command: str | None = None  # ssh_config ProxyCommand, tokens expanded (first hop only)
    password_prompts: int = 3  # NumberOfPasswordPrompts: tries of a keyboard-interactive/password prompt

    @property
    def address(self) -> str:
        return f"{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name under which known_hosts stores this server's key: `host` or `[host]:port`, or
        the HostKeyAlias as it is (OpenSSH looks the alias up without the port)."""
        if self.host_key_alias:
            return self.host_key_alias
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


@dataclass(frozen=True)
class SshRoute:
    """The login node plus the jump hosts in front of it (first hop first)."""

    target: Endpoint
    jumps: tuple[Endpoint, ...] = field(default_factory=tuple)
    pins: tuple[str, ...] = ()  # SHA256 fingerprints of the target's host keys, without '='
    connect_timeout: float = 15.0
    resolver: str = "ssh -G"  # who read ssh_config: "ssh -G" (OpenSSH) or "paramiko"

    def describe(self) -> str:
        return " -> ".join(str(e) for e in (*self.jumps, self.target))


def ssh_config_path() -> Path:
    """`$AIFACTORY_SSH_CONFIG`, else ~/.ssh/config."""
    return app_settings.current().ssh_config_file()


def ssh_config_override() -> Path | None:
    """`$AIFACTORY_SSH_CONFIG` (as `ssh -F`), None when unset: OpenSSH reads its usual files."""
    chosen = app_settings.current().ssh_config
    return Path(chosen).expanduser() if chosen else None


def load_ssh_config(path: Path | None = None) -> paramiko.SSHConfig:
    """The ssh_config as paramiko reads it (the fallback without an OpenSSH client)."""
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


def _default_files(names: tuple[str, ...]) -> list[str]:
    return [expand(p) for p in names]


def _known_hosts_from(options: HostOptions, explicit: str | None) -> tuple[str, ...]:
    if explicit:
        return (expand(explicit),)
    user_files = options.get("userknownhostsfile")
    global_files = options.get("globalknownhostsfile")
    files = [expand(p) for p in user_files.split()] if user_files else _default_files(DEFAULT_KNOWN_HOSTS)
    files += [expand(p) for p in global_files.split()] if global_files else _default_files(DEFAULT_GLOBAL_KNOWN_HOSTS)
    return tuple(f for f in files if f != os.devnull)


def _own_known_hosts(options: HostOptions) -> bool:
    """Whether UserKnownHostsFile was configured (not OpenSSH's default pair)."""
    value = options.get("userknownhostsfile")
    return value is not None and value.split() != _default_files(DEFAULT_KNOWN_HOSTS)


SAFE_TOKEN = re.compile(r"[A-Za-z0-9._:@%+\[\]-]+")


def _agent_socket(value: str | None) -> str | None:
    """IdentityAgent: None (unset or SSH_AUTH_SOCK: the environment's agent), "none", or a path."""
    if value is None or value == "SSH_AUTH_SOCK":
        return None
    if value.lower() == "none":
        return "none"
    if value.startswith("$"):
        return os.environ.get(value.strip("${}")) or "none"
    return expand(value)


def _endpoint(alias: str, options: HostOptions, *, identity_files: list[str], known_hosts: str | None) -> Endpoint:
    hostname = options.get("hostname") or alias
    port = int(options.get("port") or 22)
    user = options.get("user") or local_user()
    tokens = Tokens(host=hostname, port=port, user=user, alias=alias, host_key_alias=options.get("hostkeyalias"))
    proxy = options.get("proxycommand")
    if proxy is not None:
        for value, what in ((hostname, "host name"), (user, "user"), (alias, "host")):
            if not SAFE_TOKEN.fullmatch(value):
                raise ConfigError(
                    f"the {what} '{value}' contains characters that would reach the ProxyCommand's shell",
                    "use a plain host name and user",
                )
        proxy = tokens.expand(proxy)
    prompts = options.get("numberofpasswordprompts")
    return Endpoint(
        alias=alias,
        hostname=hostname,
        port=port,
        user=user,
        identity_files=tuple(dict.fromkeys(tokens.expand(p) for p in identity_files)),
        known_hosts_files=_known_hosts_from(options, known_hosts),
        identities_only=options.flag("identitiesonly"),
        host_key_alias=options.get("hostkeyalias"),
        certificate_files=tuple(dict.fromkeys(tokens.expand(p) for p in options.all("certificatefile"))),
        identity_agent=_agent_socket(options.raw("identityagent")),
        proxy_command=proxy,
        password_prompts=int(prompts) if prompts and prompts.isdigit() else 3,
    )


def resolve_ssh(settings: SshSettings, config: paramiko.SSHConfig | None = None) -> SshRoute:
    """The route to the site's login node from the profile's `ssh:` block and ssh_config (see the
    module docstring for the precedence). `config`: a paramiko SSHConfig to read instead of asking
    OpenSSH (the fallback path; tests)."""
    if not settings.host:
        raise ProfileError("the profile has no ssh.host", "set ssh.host (a host name or an ~/.ssh/config alias)")
    cfg_file = ssh_config_override()
    options = target_options(settings, config)
    explicit_ids = [expand(settings.identity_file)] if settings.identity_file else []
    target = _endpoint(
        settings.host, options, identity_files=explicit_ids + options.identity_files(), known_hosts=settings.known_hosts
    )
    jump_spec = settings.proxy_jump if settings.proxy_jump is not None else options.get("proxyjump")
    jumps = _resolve_jumps(jump_spec, cfg_file, config, settings, target.user, depth=0)
    if jumps or settings.proxy_jump is not None:  # like -J on the command line: no ProxyCommand
        target = replace(target, proxy_command=None)
    timeout = settings.connect_timeout
    config_timeout = options.get("connecttimeout")
    unset = settings.connect_timeout == DEFAULT_CONNECT_TIMEOUT  # the agent is handed every field, set or not
    if unset and config_timeout and config_timeout.isdigit():
        timeout = float(config_timeout)
    pins = tuple(fp.rstrip("=") for fp in settings.host_key_fingerprints)
    return SshRoute(target=target, jumps=tuple(jumps), pins=pins, connect_timeout=timeout, resolver=options.source)


def target_options(settings: SshSettings, config: paramiko.SSHConfig | None = None) -> HostOptions:
    """The login node's ssh_config settings, as `resolve_ssh` reads them (`-l` the profile's user;
    the profile's port only where ssh_config sets none, then as `-p`)."""
    assert settings.host
    cfg_file = ssh_config_override()
    options = lookup(settings.host, config_file=cfg_file, user=settings.user, paramiko_config=config)
    if settings.port and int(options.get("port") or 22) == 22 and settings.port != 22:
        # the profile's port is a default: ssh_config's Port wins; else as `ssh -p` (Match, %p)
        options = lookup(
            settings.host, config_file=cfg_file, user=settings.user, port=settings.port, paramiko_config=config
        )
    return options


def _resolve_jumps(
    spec: str | None,
    cfg_file: Path | None,
    config: paramiko.SSHConfig | None,
    settings: SshSettings,
    default_user: str,
    depth: int,
) -> list[Endpoint]:
    if not spec or spec.strip().lower() == "none":
        return []
    if depth > MAX_JUMP_DEPTH:
        raise ConfigError(f"ProxyJump chain longer than {MAX_JUMP_DEPTH} hops (a loop in ssh_config?)")
    hops: list[Endpoint] = []
    for i, part in enumerate(p for p in spec.split(",") if p.strip()):
        user, host, port = parse_jump_spec(part)
        options = lookup(host, config_file=cfg_file, user=user, port=port, paramiko_config=config)
        if not user and options.get("user") == local_user():
            # a jump host without a user of its own logs in as the login node's user
            options = HostOptions({**options.values, "user": [default_user]}, options.source)
        ids = options.identity_files()
        if settings.identity_file:
            ids.append(expand(settings.identity_file))
        known = None if _own_known_hosts(options) else settings.known_hosts
        hop = _endpoint(host, options, identity_files=ids, known_hosts=known)
        if i > 0:
            hop = replace(hop, proxy_command=None)  # later hops go through the earlier ones
        if i == 0:
            # like OpenSSH: the first hop's own ProxyJump is honoured (later hops go through it)
            hops += _resolve_jumps(options.get("proxyjump"), cfg_file, config, settings, hop.user, depth + 1)
        hops.append(hop)
    return hops
