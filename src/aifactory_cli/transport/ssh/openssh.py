"""A host's ssh_config settings as OpenSSH resolves them (no network).

Where an `ssh` binary is installed, `ssh -G [-F FILE] [-l USER] [-p PORT] HOST` prints the final
settings after `Include`, `Match` (with aifactory's login name, so `Match user` and `%r` use it),
tokens and defaults: the most faithful resolver there is (~5 ms). Without one, paramiko's
SSHConfig reads the file and a note says, once, what it cannot honour.

Both give `HostOptions`: lower-case keyword -> values, as `ssh -G` prints them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aifactory_cli.errors import ConfigError

if TYPE_CHECKING:
    import paramiko

# what `ssh -G` lists when no IdentityFile is configured (OpenSSH 8-9); such a list means "the
# defaults", which the login code looks for itself
DEFAULT_IDENTITY_FILES = frozenset(
    f"~/.ssh/{n}" for n in ("id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk", "id_xmss", "id_dsa")
)
MULTI = ("identityfile", "certificatefile")  # keywords that may repeat
G_TIMEOUT = 10.0
FALLBACK_NOTE = (
    "aifactory: note: no OpenSSH client with `ssh -G` on PATH, so ssh_config is read by paramiko, which does "
    "not honour Include, /etc/ssh/ssh_config, `Match user` with the login name (it matches the local user), "
    "Match exec/canonical, CanonicalizeHostname, nor tokens other than %h %p %r %n %d %u %% outside "
    "HostName/ProxyCommand/IdentityFile; install the OpenSSH client for full ssh_config support"
)
_noted: set[str] = set()


@dataclass(frozen=True)
class HostOptions:
    """One host's settings: `values[keyword]` is the list of its values (one, except IdentityFile
    and CertificateFile); `source` says who resolved them ("ssh -G" or "paramiko")."""

    values: dict[str, list[str]]
    source: str

    def raw(self, key: str) -> str | None:
        vals = self.values.get(key)
        return vals[0] if vals else None

    def get(self, key: str) -> str | None:
        """The value, None when unset or `none`."""
        v = self.raw(key)
        return None if v is None or v.lower() == "none" else v

    def all(self, key: str) -> list[str]:
        return list(self.values.get(key, []))

    def identity_files(self) -> list[str]:
        """The configured IdentityFile entries; [] when only OpenSSH's defaults are listed."""
        files = self.all("identityfile")
        return [] if set(files) <= DEFAULT_IDENTITY_FILES else files

    def flag(self, key: str) -> bool:
        return (self.get(key) or "no").lower() in ("yes", "true")


def ssh_binary() -> str | None:
    return shutil.which("ssh")


def lookup(
    host: str,
    *,
    config_file: Path | None,
    user: str | None = None,
    port: int | None = None,
    paramiko_config: paramiko.SSHConfig | None = None,
) -> HostOptions:
    """`host`'s settings. `config_file`: -F FILE (None: OpenSSH's own ~/.ssh/config and
    /etc/ssh/ssh_config). `user` / `port` act as `-l` / `-p` on ssh's command line: they win over
    the file and are what `Match user` and `%r` / `%p` see. A given `paramiko_config` (or no
    `ssh` binary) takes the paramiko path."""
    binary = ssh_binary() if paramiko_config is None else None
    if binary is None:
        return paramiko_lookup(host, config_file=config_file, user=user, port=port, config=paramiko_config)
    return ssh_g(binary, host, config_file=config_file, user=user, port=port)


def ssh_g(binary: str, host: str, *, config_file: Path | None, user: str | None, port: int | None) -> HostOptions:
    if host.startswith("-") or any(c.isspace() for c in host):
        raise ConfigError(f"'{host}' is not a host name or ssh_config alias", "set ssh.host to a host name or alias")
    cmd = [binary, "-G"]
    if config_file is not None:
        cmd += ["-F", str(config_file) if config_file.is_file() else os.devnull]
    if user:
        cmd += ["-l", user]
    if port:
        cmd += ["-p", str(port)]
    cmd += ["--", host]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=G_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"cannot run `{' '.join(cmd)}` to read the ssh config: {exc}") from exc
    if done.returncode != 0 and "usage:" in done.stderr.lower():  # an ssh without -G (OpenSSH < 6.8)
        return paramiko_lookup(host, config_file=config_file, user=user, port=port, config=None)
    if done.returncode != 0:
        err = " ".join(
            line.strip() for line in done.stderr.splitlines() if line.strip() and "Pseudo-terminal" not in line
        )
        where = str(config_file) if config_file is not None else "~/.ssh/config, /etc/ssh/ssh_config"
        raise ConfigError(
            f"OpenSSH refuses the settings for host '{host}' (ssh_config: {where}): {err or f'exit {done.returncode}'}",
            f"`{shlex.join(cmd)}` shows the same; fix the ssh_config or the user/host in aifactory's settings",
        )
    return HostOptions(parse_g(done.stdout), "ssh -G")


def parse_g(text: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if not key:
            continue
        key = key.lower()
        if key in MULTI:
            values.setdefault(key, []).append(value)
        else:
            values.setdefault(key, [value])
    return values


def paramiko_lookup(
    host: str,
    *,
    config_file: Path | None,
    user: str | None,
    port: int | None,
    config: paramiko.SSHConfig | None,
) -> HostOptions:
    """The paramiko path: said once per process (stderr), since it cannot honour everything."""
    import paramiko

    if config is None:
        if "fallback" not in _noted:
            _noted.add("fallback")
            print(FALLBACK_NOTE, file=sys.stderr)
        path = config_file if config_file is not None else Path("~/.ssh/config").expanduser()
        config = paramiko.SSHConfig()
        if path.is_file():
            try:
                config = paramiko.SSHConfig.from_path(str(path))
            except (paramiko.SSHException, OSError, ValueError) as exc:
                raise ConfigError(f"cannot read the ssh config {path}: {exc}", "fix the file") from exc
    found = config.lookup(host)
    values: dict[str, list[str]] = {}
    for key, value in found.items():
        values[key.lower()] = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if user:
        values["user"] = [user]
    if port:
        values["port"] = [str(port)]
    values.setdefault("hostname", [host])
    values.setdefault("port", ["22"])
    values.setdefault("user", [local_user()])
    ctx = Tokens(host=values["hostname"][0], port=int(values["port"][0]), user=values["user"][0], alias=host)
    for key in ("userknownhostsfile", "globalknownhostsfile"):
        if key in values:
            values[key] = [" ".join(ctx.expand(p) for p in values[key][0].split())]
    return HostOptions(values, "paramiko")


def local_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry
        return "root"


@dataclass(frozen=True)
class Tokens:
    """ssh_config(5) TOKENS for one host, for the settings `ssh -G` leaves unexpanded
    (IdentityFile, CertificateFile, ProxyCommand)."""

    host: str  # %h: the HostName
    port: int  # %p
    user: str  # %r: the remote user
    alias: str  # %n: the name given on the command line
    host_key_alias: str | None = None  # %k (else the host name)

    def expand(self, text: str) -> str:
        local_host = socket.gethostname()
        table = {
            "%": "%",
            "h": self.host,
            "p": str(self.port),
            "r": self.user,
            "n": self.alias,
            "k": self.host_key_alias or self.host,
            "d": os.path.expanduser("~"),
            "u": local_user(),
            "i": str(os.getuid()) if hasattr(os, "getuid") else "0",
            "l": local_host,
            "L": local_host.split(".")[0],
        }
        out: list[str] = []
        i = 0
        while i < len(text):
            c = text[i]
            if c == "%" and i + 1 < len(text) and text[i + 1] in table:
                out.append(table[text[i + 1]])
                i += 2
                continue
            out.append(c)
            i += 1
        result = "".join(out)
        return os.path.expanduser(result) if result.startswith("~") else result
