"""OpenSSH host certificates (PROTOCOL.certkeys), checked as `ssh` checks them against the
`@cert-authority` lines of known_hosts: a host certificate (type 2), signed by a CA trusted for the
host, valid now, naming the host (or its HostKeyAlias) among its principals (an empty list names
every host), with no critical options. Parsing is pure; the CA's signature is checked by
paramiko's key classes (imported only then)."""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

CERT_SUFFIX = "-cert-v01@openssh.com"
HOST_CERT = 2
# the fields between the nonce and the serial, by key type: strings (s) or mpints (m)
KEY_FIELDS = {
    "ssh-ed25519": "s",
    "ecdsa-sha2-nistp256": "ss",
    "ecdsa-sha2-nistp384": "ss",
    "ecdsa-sha2-nistp521": "ss",
    "ssh-rsa": "mm",
    "ssh-dss": "mmmm",
}
# what paramiko may negotiate for a certified host key (asked for when a CA is trusted for the host)
CERT_ALGORITHMS = (
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
)


class CertError(ValueError):
    """A certificate that cannot be used; the message says why (as OpenSSH's reason)."""


@dataclass(frozen=True)
class Certificate:
    key_type: str  # of the certified key: "ssh-ed25519"...
    key_blob: bytes  # the certified key as a plain public key blob
    cert_type: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    critical: bytes
    ca_blob: bytes
    signed: bytes  # what the CA signed
    signature: bytes


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise CertError("certificate truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def uint64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def string(self) -> bytes:
        return self.take(self.uint32())


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def parse(blob: bytes) -> Certificate:
    r = _Reader(blob)
    cert_name = r.string().decode(errors="replace")
    if not cert_name.endswith(CERT_SUFFIX) or cert_name[: -len(CERT_SUFFIX)] not in KEY_FIELDS:
        raise CertError(f"not a certificate type aifactory knows: {cert_name}")
    key_type = cert_name[: -len(CERT_SUFFIX)]
    r.string()  # nonce
    fields = [r.string() for _ in KEY_FIELDS[key_type]]  # mpints are strings on the wire
    r.uint64()  # serial
    cert_type = r.uint32()
    key_id = r.string().decode(errors="replace")
    names = _Reader(r.string())
    principals: list[str] = []
    while names.pos < len(names.data):
        principals.append(names.string().decode(errors="replace"))
    valid_after, valid_before = r.uint64(), r.uint64()
    critical = r.string()
    r.string()  # extensions
    r.string()  # reserved
    ca_blob = r.string()
    signed = blob[: r.pos]
    signature = r.string()
    key_blob = _string(key_type.encode()) + b"".join(_string(f) for f in fields)
    return Certificate(
        key_type, key_blob, cert_type, key_id, tuple(principals), valid_after, valid_before, critical, ca_blob,
        signed, signature,
    )  # fmt: skip


def check(cert: Certificate, name: str, now: float | None = None) -> None:
    """Raise CertError unless `cert` is a host certificate valid now for `name` (the host name
    or HostKeyAlias, without port); the CA's signature is checked too."""
    if cert.cert_type != HOST_CERT:
        raise CertError("not a host certificate")
    moment = int(now if now is not None else time.time())
    if moment < cert.valid_after:
        raise CertError("certificate is not yet valid")
    if moment >= cert.valid_before:
        raise CertError("certificate has expired")
    if cert.principals and name not in cert.principals:
        raise CertError(f"'{name}' is not a listed principal ({', '.join(cert.principals)})")
    if cert.critical:
        raise CertError("certificate contains unsupported critical options")
    if not signature_valid(cert):
        raise CertError("the certificate authority's signature does not verify")


def signature_valid(cert: Certificate) -> bool:
    import paramiko

    ca_type = _Reader(cert.ca_blob).string().decode(errors="replace")
    try:
        ca = paramiko.PKey.from_type_string(ca_type, cert.ca_blob)
        return bool(ca.verify_ssh_sig(cert.signed, paramiko.Message(cert.signature)))
    except Exception:  # an unknown CA key type, a damaged signature
        return False
