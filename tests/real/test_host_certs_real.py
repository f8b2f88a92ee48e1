"""Host certificates (`@cert-authority` in known_hosts), side by side with the OpenSSH client: own
sshds (tests/real/own_sshd.py) present the bed's host key with a certificate signed by a test host
CA, valid for the server's address, for another name, or expired. known_hosts holds no plain key:
only the CA line (or a CA line for another CA, or the CA also marked `@revoked`). Both clients must
get the same outcome in every case."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from aifactory_cli.errors import AifactoryError, HostKeyError
from aifactory_cli.transport.ssh.connection import SshTransport
from aifactory_cli.transport.ssh.settings import SshSettings
from tests.real.conftest import TESTBED_KEY
from tests.real.own_sshd import HOST_KEY, OwnSshd, own_sshd

pytestmark = pytest.mark.real


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def _host_cert(tmp: Path, ca: Path, name: str, principals: str, validity: str) -> Path:
    pub = tmp / f"host_{name}.pub"
    pub.write_text(HOST_KEY.with_suffix(".pub").read_text())
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-h", "-I", f"bed-{name}", "-n", principals, "-V", validity,
                    str(pub)], check=True)  # fmt: skip
    return tmp / f"host_{name}-cert.pub"


def _line(path: Path) -> str:
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def _outcomes(cfg: Path, alias: str) -> tuple[int, Any]:
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    theirs = subprocess.run(
        ["ssh", "-F", str(cfg), alias, "true"], capture_output=True, text=True, timeout=30, env=env,
        stdin=subprocess.DEVNULL,
    ).returncode  # fmt: skip
    tr = SshTransport(SshSettings(host=alias, connect_timeout=10), site="certtest", interactive=False)
    try:
        ours: Any = tr.run("true").rc
    except AifactoryError as exc:
        ours = exc
    finally:
        tr.close()
    print(f"{alias:<14} OpenSSH exit {theirs:<4} aifactory {ours!r}")
    return theirs, ours


def test_host_certificates_like_openssh(
    tmp_path: Path, testbed_client: Path, isolated_ssh_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, other_ca = _keygen(tmp_path / "host_ca"), _keygen(tmp_path / "other_ca")
    address = "127.0.0.9"
    certs = {
        "valid": _host_cert(tmp_path, ca, "valid", f"{address},bedalias", "-5m:+1h"),
        "wrongname": _host_cert(tmp_path, ca, "wrongname", "login.elsewhere.example", "-5m:+1h"),
        "expired": _host_cert(tmp_path, ca, "expired", address, "-2h:-1h"),
    }
    with contextlib.ExitStack() as stack:
        servers: dict[str, OwnSshd] = {
            name: stack.enter_context(own_sshd(tmp_path / f"sshd_{name}", f"HostCertificate {cert}\n", address))
            for name, cert in certs.items()
        }
        kh = {
            "ca": f"@cert-authority [{address}]:* {_line(ca)}\n",
            "ca_alias": f"@cert-authority bedalias {_line(ca)}\n",
            "other_ca": f"@cert-authority * {_line(other_ca)}\n",
            "ca_revoked": f"@cert-authority * {_line(ca)}\n@revoked * {_line(ca)}\n",
        }
        for name, text in kh.items():
            (tmp_path / f"kh_{name}").write_text(text)
        cases = [  # alias, server, known_hosts, extra, works
            ("valid", "valid", "ca", "", True),
            ("alias", "valid", "ca_alias", "    HostKeyAlias bedalias\n", True),
            ("wrongname", "wrongname", "ca", "", False),
            ("expired", "expired", "ca", "", False),
            ("otherca", "valid", "other_ca", "", False),
            ("revokedca", "valid", "ca_revoked", "", False),
        ]
        cfg = tmp_path / "ssh_config"
        cfg.write_text(
            "".join(
                servers[server]
                .ssh_config(alias, TESTBED_KEY, extra)
                .replace(str(servers[server].known_hosts), str(tmp_path / f"kh_{known}"))
                for alias, server, known, extra, _ in cases
            )
        )
        monkeypatch.setenv("AIFACTORY_SSH_CONFIG", str(cfg))
        results = [(alias, works, *_outcomes(cfg, alias)) for alias, _, _, _, works in cases]  # all, then assert
    for alias, works, theirs, ours in results:
        if works:
            assert theirs == 0 and ours == 0, (alias, ours)
        else:
            assert theirs == 255 and isinstance(ours, HostKeyError), (alias, ours)
    reasons = {alias: str(ours) for alias, _, _, ours in results}
    assert "not a listed principal" in reasons["wrongname"]
    assert "expired" in reasons["expired"]
    assert "no @cert-authority line" in reasons["otherca"]
    assert "REVOKED" in reasons["revokedca"]
