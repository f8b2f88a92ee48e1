"""known_hosts parsing and host matching as OpenSSH does it (transport/ssh/knownhosts.py), and what
check_host_key makes of markers, rotations and patterns."""

from __future__ import annotations

import base64
from pathlib import Path

import paramiko
import pytest

from aifactory_cli.errors import HostKeyError
from aifactory_cli.transport.ssh.config import Endpoint
from aifactory_cli.transport.ssh.hostkeys import check_host_key, known_key_types, load_known_hosts
from aifactory_cli.transport.ssh.knownhosts import host_matches, parse

KEY = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519" + b"k" * 36).decode()
OTHER = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519" + b"o" * 36).decode()


@pytest.mark.parametrize(
    ("patterns", "name", "expected"),
    [
        (("lumi.csc.fi",), "LUMI.csc.fi", True),
        (("*.csc.fi",), "lumi.csc.fi", True),
        (("*.csc.fi", "!lumi-uan01.csc.fi"), "lumi-uan01.csc.fi", False),  # a negation wins
        (("login?.example",), "login1.example", True),
        (("[h.example]:2222",), "[h.example]:2222", True),
        (("[h.example]:2222",), "h.example", False),
        (("[*.example]:2222",), "[h.example]:2222", True),
        ((paramiko.HostKeys.hash_host("[h.example]:2222"),), "[h.example]:2222", True),
        ((paramiko.HostKeys.hash_host("h.example"),), "other.example", False),
    ],
)
def test_host_patterns(patterns: tuple[str, ...], name: str, expected: bool) -> None:
    assert host_matches(patterns, name) is expected


def test_unusable_lines_are_skipped_and_said() -> None:
    text = (
        "# a comment\n\n"
        "@cert-authority *.example ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ=\n"  # bad padding
        "@nonsense h ssh-ed25519 " + KEY + "\n"
        "two words\n"
        f"h ssh-ed25519 {KEY}\n"
    )
    hosts = parse(text, "kh")
    assert [e.line for e in hosts.entries] == [6]
    assert hosts.skipped == [
        "kh:3: the ssh-rsa key is not valid base64",
        "kh:4: unknown marker @nonsense",
        "kh:5: not `hosts key-type base64-key`",
    ]


def _endpoint(tmp_path: Path, lines: list[str]) -> tuple[Endpoint, list]:
    path = tmp_path / "known_hosts"
    path.write_text("".join(line + "\n" for line in lines))
    ep = Endpoint(alias="h", hostname="h.example", port=22, user="u", known_hosts_files=(str(path),))
    return ep, load_known_hosts(ep.known_hosts_files)


def test_markers_rotation_and_revocation(tmp_path: Path) -> None:
    blob, other = base64.b64decode(KEY), base64.b64decode(OTHER)
    ep, known = _endpoint(tmp_path, [f"@cert-authority *.example ssh-ed25519 {OTHER}", f"h.example ssh-ed25519 {KEY}"])
    assert check_host_key(ep, "ssh-ed25519", blob, known).endswith("known_hosts")  # the CA line is not a host key
    assert known_key_types(ep, known) == ["ssh-ed25519"]
    ep, known = _endpoint(tmp_path, [f"h.example ssh-ed25519 {OTHER}", f"h.example ssh-ed25519 {KEY}"])
    assert check_host_key(ep, "ssh-ed25519", blob, known)  # either key of a rotation
    ep, known = _endpoint(tmp_path, [f"h.example ssh-ed25519 {KEY}", f"@revoked * ssh-ed25519 {KEY}"])
    with pytest.raises(HostKeyError, match="REVOKED"):
        check_host_key(ep, "ssh-ed25519", blob, known, pins=("SHA256:whatever",))
    ep, known = _endpoint(tmp_path, [f"@cert-authority *.example ssh-ed25519 {OTHER}"])
    with pytest.raises(HostKeyError, match="but the server offered no host certificate"):
        check_host_key(ep, "ssh-ed25519", other, known)


def test_the_keyscan_hint_names_the_users_file_not_the_global_one(tmp_path: Path) -> None:
    ep = Endpoint(alias="h", hostname="h.example", port=22, user="u", known_hosts_files=("/etc/ssh/ssh_known_hosts",))
    with pytest.raises(HostKeyError) as exc:
        check_host_key(ep, "ssh-ed25519", base64.b64decode(KEY), load_known_hosts(ep.known_hosts_files))
    assert ">> ~/.ssh/known_hosts" in (exc.value.hint or "") and "/etc/ssh" not in (exc.value.hint or "")


def test_paramikos_banner_error_reads_well() -> None:
    from aifactory_cli.transport.ssh.login import _readable

    text = _readable(Exception("Error reading SSH protocol banner[Errno 104] Connection reset by peer"))
    assert text == "Error reading SSH protocol banner: [Errno 104] Connection reset by peer"
    assert _readable(EOFError()) == "EOFError"
