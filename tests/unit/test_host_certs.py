"""OpenSSH host certificates parsed and checked (transport/ssh/hostcert.py) on certificates made by
ssh-keygen: the checks OpenSSH makes (host type, validity, principals, the CA's signature)."""

from __future__ import annotations

import base64
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from aifactory_cli.transport.ssh import hostcert

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen")


def _keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    return path


def _cert(tmp: Path, kind: str, *args: str) -> tuple[hostcert.Certificate, bytes]:
    ca, key = _keygen(tmp / f"ca_{kind}"), _keygen(tmp / f"key_{kind}", kind)
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "id-1", *args, str(key) + ".pub"], check=True)
    blob = base64.b64decode((tmp / f"key_{kind}-cert.pub").read_text().split()[1])
    plain = base64.b64decode((tmp / f"key_{kind}.pub").read_text().split()[1])
    return hostcert.parse(blob), plain


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_a_valid_host_certificate_of_each_key_type(tmp_path: Path, kind: str) -> None:
    cert, plain = _cert(tmp_path, kind, "-h", "-n", "login1.example.org,login2.example.org", "-V", "-5m:+1h")
    assert cert.key_blob == plain and cert.key_id == "id-1"
    assert cert.principals == ("login1.example.org", "login2.example.org")
    hostcert.check(cert, "login2.example.org")
    with pytest.raises(hostcert.CertError, match="not a listed principal"):
        hostcert.check(cert, "login3.example.org")


def test_validity_type_and_signature_are_checked(tmp_path: Path) -> None:
    cert, _ = _cert(tmp_path, "ed25519", "-h", "-V", "+1h:+2h")  # no principals: any host
    with pytest.raises(hostcert.CertError, match="not yet valid"):
        hostcert.check(cert, "any.example.org")
    hostcert.check(cert, "any.example.org", now=cert.valid_after + 1)
    with pytest.raises(hostcert.CertError, match="expired"):
        hostcert.check(cert, "any.example.org", now=cert.valid_before)
    forged = replace(cert, signed=cert.signed.replace(b"id-1", b"id-2"))  # the CA signed other bytes
    with pytest.raises(hostcert.CertError, match="signature does not verify"):
        hostcert.check(forged, "any.example.org", now=cert.valid_after + 1)
    user_cert, _ = _cert(tmp_path, "ecdsa", "-n", "alice")  # a user certificate
    with pytest.raises(hostcert.CertError, match="not a host certificate"):
        hostcert.check(user_cert, "alice")


def test_a_damaged_certificate_is_a_cert_error_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(hostcert.CertError):
        hostcert.parse(b"\x00\x00\x00\x20ssh-ed25519-cert-v01@openssh.com")
    with pytest.raises(hostcert.CertError, match="not a certificate type"):
        hostcert.parse(b"\x00\x00\x00\x0bssh-ed25519" + b"\x00" * 40)
