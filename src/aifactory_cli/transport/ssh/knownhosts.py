"""known_hosts files read as OpenSSH reads them (pure, standard library only): markers
(`@revoked`, `@cert-authority`), comma-separated host patterns with `*`/`?` wildcards and `!`
negations, hashed names (`|1|salt|hash`), several keys per host and type. A line that cannot be used
is skipped and said (`skipped`), never a crash: one odd line in a global file that an institute
manages must not stop every connection (sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT")."""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
from dataclasses import dataclass, field

MARKERS = ("@revoked", "@cert-authority")


@dataclass(frozen=True)
class Entry:
    marker: str | None  # None, "@revoked" or "@cert-authority"
    patterns: tuple[str, ...]
    key_type: str
    key_blob: bytes
    line: int

    def matches(self, name: str) -> bool:
        return host_matches(self.patterns, name)


@dataclass
class KnownHosts:
    path: str
    entries: list[Entry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "FILE:LINE: why"

    def keys_for(self, name: str) -> list[Entry]:
        """The plain (unmarked) keys for host `name`."""
        return [e for e in self.entries if e.marker is None and e.matches(name)]

    def revoked(self, key_blob: bytes, name: str) -> Entry | None:
        for e in self.entries:
            if e.marker == "@revoked" and e.key_blob == key_blob and (e.matches(name) or "*" in e.patterns):
                return e
        return None

    def authorities_for(self, name: str) -> list[Entry]:
        return [e for e in self.entries if e.marker == "@cert-authority" and e.matches(name)]


def parse(text: str, path: str) -> KnownHosts:
    out = KnownHosts(path)
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        marker = None
        if words[0].startswith("@"):
            if words[0] not in MARKERS:
                out.skipped.append(f"{path}:{number}: unknown marker {words[0]}")
                continue
            marker, words = words[0], words[1:]
        if len(words) < 3:
            out.skipped.append(f"{path}:{number}: not `hosts key-type base64-key`")
            continue
        hosts, key_type, data = words[0], words[1], words[2]
        try:
            blob = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            out.skipped.append(f"{path}:{number}: the {key_type} key is not valid base64")
            continue
        out.entries.append(Entry(marker, tuple(hosts.split(",")), key_type, blob, number))
    return out


def host_matches(patterns: tuple[str, ...], name: str) -> bool:
    """OpenSSH's rule: some positive pattern matches and no negated one does (case-insensitive;
    `name` is `host` or `[host]:port`, as known_hosts writes it)."""
    name = name.lower()
    positive = False
    for pattern in patterns:
        if pattern.startswith("|1|"):
            if _hashed(pattern, name):
                positive = True
            continue
        negated = pattern.startswith("!")
        pat = pattern[1:] if negated else pattern
        if fnmatch.fnmatchcase(name, pat.lower().replace("[", "[[]")):
            if negated:
                return False
            positive = True
    return positive


def _hashed(pattern: str, name: str) -> bool:
    parts = pattern.split("|")  # ['', '1', salt, hash]
    if len(parts) != 4:
        return False
    try:
        salt, digest = base64.b64decode(parts[2]), base64.b64decode(parts[3])
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)
