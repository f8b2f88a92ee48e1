"""Host keys (pure): known_hosts files plus the profile's pinned SHA256 fingerprints; a key is never
added automatically."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aifactory_cli.errors import HostKeyError
from aifactory_cli.transport.ssh import hostcert
from aifactory_cli.transport.ssh.knownhosts import KnownHosts, parse

if TYPE_CHECKING:
    from aifactory_cli.transport.ssh.config import Endpoint


def fingerprint(key_blob: bytes) -> str:
    """`SHA256:<base64 without padding>` of a public key blob, as `ssh-keygen -lf` prints it."""
    digest = hashlib.sha256(key_blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def load_known_hosts(files: tuple[str, ...]) -> list[tuple[str, KnownHosts]]:
    """The known_hosts files that exist, parsed as OpenSSH reads them (knownhosts.py); lines that
    cannot be used are skipped (`KnownHosts.skipped`), never a crash."""
    out = []
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        out.append((path, parse(text, path)))
    return out


def known_key_types(endpoint: Endpoint, known: list[tuple[str, KnownHosts]]) -> list[str]:
    types: list[str] = []
    for _, hosts in known:
        types += [e.key_type for e in hosts.keys_for(endpoint.known_hosts_name) if e.key_type not in types]
    return types


def check_host_key(
    endpoint: Endpoint,
    key_type: str,
    key_blob: bytes,
    known: list[tuple[str, KnownHosts]],
    pins: tuple[str, ...] = (),
    cert_blob: bytes | None = None,
) -> str:
    """Accept the server's key if it is pinned or in known_hosts (any of the host's keys of that
    type: round-robin login nodes, a rotation), or if it came with a valid host certificate
    (`cert_blob`) of a CA that known_hosts trusts for the host (`@cert-authority`); refuse a
    revoked key or CA whatever else says; else raise HostKeyError. A certificate that does not
    pass falls back to the plain key, as OpenSSH does. Returns how it was accepted."""
    fp = fingerprint(key_blob)
    where = f"{endpoint.hostname}:{endpoint.port}"
    name = endpoint.known_hosts_name
    cert: hostcert.Certificate | None = None
    cert_problem = "the server offered no host certificate"
    if cert_blob is not None:
        try:
            cert = hostcert.parse(cert_blob)
        except hostcert.CertError as exc:
            cert_problem = f"its host certificate cannot be read: {exc}"
    checked = [(key_blob, "host key")] + ([(cert.ca_blob, "host certificate authority")] if cert else [])
    for path, hosts in known:
        for blob, what in checked:
            revoked = hosts.revoked(blob, name)
            if revoked is not None:
                raise HostKeyError(
                    f"the {what} of {where} ({revoked.key_type} {fingerprint(blob)}) is REVOKED "
                    f"({path}:{revoked.line}): refusing to connect",
                    "the site or your administrator marked this key as not to be trusted; ask the site which key "
                    "its login nodes use now",
                )
    if fp in pins:
        return "pinned"
    if cert is not None:
        trusted = [(p, e) for p, hosts in known for e in hosts.authorities_for(name) if e.key_blob == cert.ca_blob]
        if not trusted:
            cert_problem = f"no @cert-authority line for {name} trusts the CA that signed its host certificate"
        else:
            try:
                hostcert.check(cert, endpoint.host_key_alias or endpoint.hostname)
                return f"{trusted[0][0]}:{trusted[0][1].line} (host certificate {cert.key_id!r})"
            except hostcert.CertError as exc:
                cert_problem = f"its host certificate is not valid: {exc}"
    changed_in: list[str] = []
    authorities: list[str] = []
    for path, hosts in known:
        same_type = [e for e in hosts.keys_for(name) if e.key_type == key_type]
        if any(e.key_blob == key_blob for e in same_type):
            return path
        if same_type:
            changed_in.append(path)
        authorities += [f"{path}:{e.line}" for e in hosts.authorities_for(name)]
    if changed_in:
        raise HostKeyError(
            f"the host key of {where} has CHANGED: {', '.join(changed_in)} has another {key_type} key for "
            f"{name}, the server offered {fp}. Someone may be intercepting the connection "
            "(man-in-the-middle), or the site replaced its keys",
            f"do not connect until you have compared {fp} with the fingerprints the site publishes; if the "
            f"change is genuine, remove the old key (ssh-keygen -R '{name}' -f {changed_in[0]}) and add the "
            "new one",
        )
    # the user's own file: a global one (/etc/ssh/ssh_known_hosts) is the administrators'
    own = [f for f in endpoint.known_hosts_files if not f.startswith("/etc/")]
    known_file = own[0] if own else "~/.ssh/known_hosts"
    keyscan = f"ssh-keyscan -p {endpoint.port} {endpoint.hostname} >> {known_file}"
    if endpoint.host_key_alias:  # stored under the alias (HostKeyAlias), as OpenSSH looks it up
        keyscan = (
            f"ssh-keyscan -p {endpoint.port} {endpoint.hostname} | sed 's/^[^ ]*/{endpoint.host_key_alias}/' "
            f">> {known_file}"
        )
    if pins:
        raise HostKeyError(
            f"the host key of {where} ({key_type} {fp}) matches neither the fingerprints pinned in the "
            f"profile ({', '.join('SHA256:' + p.removeprefix('SHA256:') for p in pins)}) nor known_hosts",
            "someone may be intercepting the connection, or the site rotated its keys: compare "
            f"{fp} with the site's published fingerprints; if it is genuine, update the profile's "
            f"ssh.host_key_fingerprints or add the key with `{keyscan}`",
        )
    if authorities:
        raise HostKeyError(
            f"the host key of {where} is not known (the server offered {key_type} {fp}); a host certificate "
            f"authority is trusted for {name} ({', '.join(authorities)}), but {cert_problem}",
            f"compare {fp} with the fingerprints the site publishes, then pin it in a user profile "
            f"(ssh.host_key_fingerprints) or add it: `{keyscan}`",
        )
    raise HostKeyError(
        f"the host key of {where} is not known (the server offered {key_type} {fp}); "
        f"{name} is not in {', '.join(endpoint.known_hosts_files) or 'any known_hosts file'}",
        f"compare {fp} with the fingerprints the site publishes, then add it: `{keyscan}` "
        "(or connect once with `ssh` and answer yes); aifactory never adds host keys by itself",
    )


def preferred_key_types(current: Sequence[str], known_types: list[str]) -> list[str]:
    """Negotiate a host key type we already know, so a known server is not refused as unknown."""
    wanted: list[str] = []
    for t in known_types:
        algos = ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if t == "ssh-rsa" else [t]
        wanted += [a for a in algos if a in current and a not in wanted]
    return wanted + [a for a in current if a not in wanted]
