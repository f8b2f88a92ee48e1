"""aifactory's own OpenSSH master for a bulk transfer, when the user has none (`mux.bulk_transport`).

paramiko encrypts in Python: on the 2-vCPU bed a 1 GiB upload over it ran at 0.60x scp, and through an
OpenSSH master it was level with scp. Users who keep a ControlMaster get that already (mux.py). For
the others, a transfer of at least MIN_BYTES starts a master of aifactory's own for its large files,
and stops it when the command ends. It logs in only where that can never cost a prompt or a weaker
host-key check than aifactory's own connection:

- `BatchMode=yes`, no password and no keyboard-interactive: the login takes the keys (files, agent,
  certificates) that ssh_config gives, or fails at once. A site that wants an MFA code refuses it,
  and aifactory's own connection carries the transfer as before. Such a refusal is remembered for a
  day (REFUSED_FOR), so the site sees one failed login a day, not one per command.
- The host key: OpenSSH accepts exactly the key that aifactory's connection verified moments before
  (known_hosts or the profile's pinned fingerprints), written into a private known_hosts under
  a `HostKeyAlias`, with `StrictHostKeyChecking=yes` (and no `KnownHostsCommand`). Another key
  (another login node with a key of its own) fails the login; nothing is ever added to the user's
  known_hosts.
- Not started (the transfer takes aifactory's connection) where: the connection was not verified by
  a plain key (a host certificate), or the profile or ssh_config gives a ProxyJump (the jump host's
  key would be OpenSSH's to check, by the user's own policy). The profile's `identity_file` is
  offered (`-i`) besides ssh_config's keys, as aifactory's own login offers it.
- The master lives in a 0700 temporary dir; `ControlPersist` ends it 30 s after its last command if
  this process dies, and it is asked to exit when the process ends.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from aifactory_cli.transport.ssh.mux import MuxRoute, master_alive

if TYPE_CHECKING:
    from aifactory_cli.transport.ssh.openssh import HostOptions
    from aifactory_cli.transport.ssh.settings import SshSettings

MIN_BYTES = 64 << 20  # below this, a login (0.2 s on the bed, more on a real site) costs more than it saves
ALIAS = "aifactory-verified"  # the HostKeyAlias under which the verified key is written
PERSIST = 30  # seconds the master waits after its last command (only matters if this process died)
START_TIMEOUT = 30.0
REFUSED_FOR = 24 * 3600.0
_started: list[tuple[MuxRoute, Path]] = []


def gcm_first(ciphers: str | None) -> str | None:
    """The user's ciphers (ssh -G's `ciphers`) with AES-GCM first, the others in their order; None
    when it has no AES-GCM. OpenSSH's default puts chacha20-poly1305 first, which on the bed moved
    a GiB in 5.0-8.6 s against 3.6-4.3 s for aes128-gcm (AES-NI); paramiko's path prefers it too."""
    names = [c for c in (ciphers or "").split(",") if c]
    gcm = [c for c in names if c.startswith("aes") and "gcm" in c]
    return ",".join(gcm + [c for c in names if c not in gcm]) if gcm else None


def master_argv(
    route: MuxRoute,
    known_hosts: Path,
    connect_timeout: float,
    identity: str | None = None,
    options: HostOptions | None = None,
) -> list[str]:
    """`ssh` starting the master in the background (`-f -N`) once it logged in; `identity`: the
    profile's key file, offered besides ssh_config's (as aifactory's own login does); `options`
    (ssh -G's): the user's ciphers, reordered (`gcm_first`), and a KnownHostsCommand to switch off
    (it could vouch for another key)."""
    ciphers = gcm_first(options.get("ciphers")) if options is not None else None
    argv = [route.binary]
    if route.config_file is not None:
        argv += ["-F", str(route.config_file) if route.config_file.is_file() else os.devnull]
    if identity:
        argv += ["-i", os.path.expanduser(identity)]
    argv += ["-M", "-S", route.control_path, "-f", "-N"]
    argv += [
        *("-o", "BatchMode=yes", "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no"),
        *("-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}"),
        *("-o", f"GlobalKnownHostsFile={os.devnull}", "-o", f"HostKeyAlias={ALIAS}"),
        *("-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no", "-o", "VerifyHostKeyDNS=no"),
        *("-o", f"ControlPersist={PERSIST}", "-o", f"ConnectTimeout={max(1, int(connect_timeout))}"),
        *("-o", "ClearAllForwardings=yes", "-o", "RemoteCommand=none", "-o", "RequestTTY=no"),
        *("-o", "PermitLocalCommand=no", "-o", "LogLevel=ERROR", "-o", "ServerAliveInterval=30"),
    ]
    if ciphers:
        argv += ["-o", f"Ciphers={ciphers}"]
    if options is not None and options.get("knownhostscommand"):  # OpenSSH 8.5+; printed only when set
        argv += ["-o", "KnownHostsCommand=none"]
    if route.user:
        argv += ["-l", route.user]
    if route.port:
        argv += ["-p", str(route.port)]
    return [*argv, "--", route.host]


def usable(settings: SshSettings, options: HostOptions, host_key: str | None) -> bool:
    """Whether a master of aifactory's own may log in for these settings (the module docstring)."""
    if not host_key or len(host_key.split()) != 2 or "-cert-" in host_key.split()[0]:
        return False
    if settings.proxy_jump:
        return False
    return options.source == "ssh -G" and options.get("proxyjump") is None


def refusal_file(state: Path, host: str, user: str | None, port: str | None, config_file: Path | None) -> Path:
    key = hashlib.sha256(f"{host}\0{user}\0{port}\0{config_file}".encode()).hexdigest()
    return state / f"openssh-refused-{key[:16]}"


def recently_refused(marker: Path) -> bool:
    try:
        return time.time() - marker.stat().st_mtime < REFUSED_FOR
    except OSError:
        return False


def start_master(
    binary: str,
    host: str,
    options: HostOptions,
    host_key: str,
    *,
    config_file: Path | None,
    state: Path,
    connect_timeout: float,
    identity: str | None = None,
) -> MuxRoute | None:
    """Log in with OpenSSH as a master for this process (module docstring); its route, or None when
    it was refused, timed out or did not answer (the caller then keeps its own connection)."""
    port = options.get("port")
    marker = refusal_file(state, host, options.get("user"), port, config_file)
    if recently_refused(marker):
        return None
    base = tempfile.gettempdir()  # a unix socket's path has 108 bytes at most, ssh adds 17 while it binds
    place = Path(tempfile.mkdtemp(prefix="aif-ssh-", dir=base if len(base) <= 60 else "/tmp"))  # 0700
    route = MuxRoute(
        binary,
        str(place / "m"),
        host,
        config_file,
        user=options.get("user"),
        port=int(port) if port and port.isdigit() else None,
    )
    known = place / "known_hosts"
    known.write_text(f"{ALIAS} {host_key}\n")
    with tempfile.TemporaryFile() as err:  # not a pipe: the master keeps its stderr once in the background
        try:
            done = subprocess.run(
                master_argv(route, known, connect_timeout, identity, options),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                timeout=START_TIMEOUT,
                start_new_session=True,  # Ctrl-C here must not cut the transfers that use it
            )
            rc = done.returncode
        except (OSError, subprocess.SubprocessError):
            rc = -1
        err.seek(0)
        why = err.read(2000).decode(errors="replace")
    if rc != 0 or not master_alive(route):
        stop(route, place)
        if refused(why):  # remembered; a network failure may pass by the next command
            with contextlib.suppress(OSError):
                state.mkdir(parents=True, exist_ok=True)
                marker.write_text(" ".join(why.split())[-500:] + "\n")
        return None
    if not _started:
        atexit.register(stop_all)  # a second registration after stop_all() emptied it: harmless
    _started.append((route, place))
    return route


def refused(stderr: str) -> bool:
    """ssh's stderr says the site refused the login (no key it takes alone: an MFA site). A host key
    other than the verified one is not remembered: another login node behind the same name may
    have its own, and the next command may reach one with the verified key; no login was tried."""
    return "Permission denied" in stderr


def stop(route: MuxRoute, place: Path) -> None:
    """Ask the master to exit (it ends its connection) and remove its private dir."""
    if os.path.exists(route.control_path):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                route.exit_argv(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=5,
                start_new_session=True,
            )
    shutil.rmtree(place, ignore_errors=True)


def stop_all() -> None:
    while _started:
        stop(*_started.pop())
