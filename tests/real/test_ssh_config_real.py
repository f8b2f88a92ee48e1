"""ssh_config as OpenSSH reads it, against real OpenSSH servers: each case is run with the OpenSSH
client (`ssh -F cfg HOST true`) and with aifactory (the SSH transport, and once `sites check` of a
profile that names the alias), expecting the same outcome. Cases: an Include'd host, a route only
through a ProxyCommand (the login node's name does not resolve here), HostKeyAlias, `Match user`
with aifactory's login name, UserKnownHostsFile with %h, IdentityAgent (a test ssh-agent), and
CertificateFile on a server of the test's own that trusts only a user CA; hashed known_hosts and a
two-hop ProxyJump chain, a key + certificate only in ssh-agent (working before, kept side by side)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from aifactory_cli.errors import AifactoryError
from aifactory_cli.transport.ssh.connection import SshTransport
from aifactory_cli.transport.ssh.settings import SshSettings
from tests.real.conftest import (
    TESTBED_JUMP_PORT,
    TESTBED_KEY,
    TESTBED_KNOWN_HOSTS,
    TESTBED_SSH_PORT,
    TESTBED_USER,
)
from tests.real.own_sshd import own_sshd

pytestmark = pytest.mark.real

STRICT = "    GlobalKnownHostsFile /dev/null\n    StrictHostKeyChecking yes\n    BatchMode yes\n"


def _host_key_line() -> str:
    for line in TESTBED_KNOWN_HOSTS.read_text().splitlines():
        if line.startswith(f"[127.0.0.1]:{TESTBED_SSH_PORT} "):
            return " ".join(line.split()[1:3])
    raise AssertionError("no bed host key")


def _openssh(cfg: Path, host: str, user: str | None = None) -> int:
    cmd = ["ssh", "-F", str(cfg), *(["-l", user] if user else []), host, "true"]
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env, stdin=subprocess.DEVNULL).returncode


def _aifactory(host: str, user: str | None = None) -> Any:
    tr = SshTransport(SshSettings(host=host, user=user, connect_timeout=10), site="cfgtest", interactive=False)
    try:
        return tr.run("true").rc
    except AifactoryError as exc:
        return exc
    finally:
        tr.close()


def _same(cfg: Path, host: str, user: str | None = None) -> tuple[int, Any]:
    theirs, ours = _openssh(cfg, host, user), _aifactory(host, user)
    print(f"{host:<12} user={user!s:<8} OpenSSH exit {theirs:<4} aifactory {ours!r}")
    return theirs, ours


@pytest.fixture
def cfg(tmp_path: Path, testbed_client: Path, isolated_ssh_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    key_line = _host_key_line()
    locked = tmp_path / "locked"
    locked.write_bytes(TESTBED_KEY.read_bytes())
    locked.chmod(0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", "s3cret", "-f", str(locked)], check=True)
    (tmp_path / "kh_alias").write_text(f"bedlogin {key_line}\n")
    (tmp_path / "kh_127.0.0.1").write_text(f"[127.0.0.1]:{TESTBED_SSH_PORT} {key_line}\n")
    (tmp_path / "kh_internal").write_text(f"[login.internal.invalid]:{TESTBED_SSH_PORT} {key_line}\n")
    hashed = tmp_path / "kh_hashed"  # names hashed (HashKnownHosts yes), both bed servers
    hashed.write_text(TESTBED_KNOWN_HOSTS.read_text())
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(hashed)], check=True, capture_output=True)
    assert "|1|" in hashed.read_text()
    snippet = tmp_path / "conf.d" / "bed.conf"
    snippet.parent.mkdir()
    snippet.write_text(
        f"Host included\n    HostName 127.0.0.1\n    Port {TESTBED_SSH_PORT}\n    User {TESTBED_USER}\n"
        f"    IdentityFile {TESTBED_KEY}\n    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {TESTBED_KNOWN_HOSTS}\n{STRICT}"
    )
    path = tmp_path / "ssh_config"
    path.write_text(
        f"Include {tmp_path}/conf.d/*.conf\n"
        # the login node is reachable only through the jump host's `ssh -W` (its name does not resolve)
        f"Host proxied\n    HostName login.internal.invalid\n    Port {TESTBED_SSH_PORT}\n"
        f"    ProxyCommand ssh -F {path} -W 127.0.0.1:%p bedjump\n"
        f"    UserKnownHostsFile {tmp_path}/kh_internal\n"
        f"Host proxybroken\n    HostName 127.0.0.1\n    Port {TESTBED_SSH_PORT}\n    ProxyCommand false\n"
        f"    UserKnownHostsFile {TESTBED_KNOWN_HOSTS}\n"
        f"Host bedjump\n    HostName 127.0.0.1\n    Port {TESTBED_JUMP_PORT}\n"
        f"    UserKnownHostsFile {TESTBED_KNOWN_HOSTS}\n"
        f"Host hashed\n    HostName 127.0.0.1\n    Port {TESTBED_SSH_PORT}\n    UserKnownHostsFile {hashed}\n"
        f"Host chained\n    HostName 127.0.0.1\n    Port {TESTBED_SSH_PORT}\n    ProxyJump bedjump,bedjump\n"
        f"    UserKnownHostsFile {TESTBED_KNOWN_HOSTS}\n"
        f"Host aliased\n    HostName 127.0.0.1\n    Port {TESTBED_SSH_PORT}\n    HostKeyAlias bedlogin\n"
        f"    UserKnownHostsFile {tmp_path}/kh_alias\n"
        f"Host tokens\n    HostName 127.0.0.1\n    Port {TESTBED_SSH_PORT}\n    UserKnownHostsFile {tmp_path}/kh_%h\n"
        f"Host agented\n    HostName 127.0.0.1\n    Port {TESTBED_SSH_PORT}\n    IdentityAgent {tmp_path}/agent.sock\n"
        f"    UserKnownHostsFile {TESTBED_KNOWN_HOSTS}\n    IdentityFile {tmp_path}/no-such-key\n"
        f"Host matched\n    HostName 127.0.0.1\n    UserKnownHostsFile {TESTBED_KNOWN_HOSTS}\n"
        f"Match user {TESTBED_USER}\n    Port {TESTBED_SSH_PORT}\n"
        # an encrypted copy of the key without .pub, IdentitiesOnly: the agent's copy is used (no passphrase)
        f"Host lockedagent\n    HostName 127.0.0.1\n    Port {TESTBED_SSH_PORT}\n    IdentitiesOnly yes\n"
        f"    IdentityFile {tmp_path}/locked\n    IdentityAgent {tmp_path}/agent.sock\n"
        f"    UserKnownHostsFile {TESTBED_KNOWN_HOSTS}\n"
        f"Host !agented !lockedagent *\n    IdentityFile {TESTBED_KEY}\n"
        f"Host *\n    User {TESTBED_USER}\n{STRICT}"
    )
    monkeypatch.setenv("AIFACTORY_SSH_CONFIG", str(path))
    return path


def test_ssh_config_cases_like_openssh(cfg: Path, tmp_path: Path) -> None:
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(tmp_path / "agent.sock")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(100):
            if (tmp_path / "agent.sock").exists():
                break
            time.sleep(0.02)
        added = subprocess.run(
            ["ssh-add", str(TESTBED_KEY)], env={**os.environ, "SSH_AUTH_SOCK": str(tmp_path / "agent.sock")},
            capture_output=True, text=True,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        cases: list[tuple[str, str | None, bool]] = [
            ("included", None, True),  # a host defined in an Include'd file
            ("proxied", None, True),  # only through ProxyCommand `ssh -W` via the jump host
            ("chained", None, True),  # a ProxyJump chain of two hops
            ("hashed", None, True),  # known_hosts with hashed names
            ("aliased", None, True),  # known_hosts has the key under the HostKeyAlias only
            ("tokens", None, True),  # UserKnownHostsFile .../kh_%h
            ("agented", None, True),  # the key only in the IdentityAgent's agent (no SSH_AUTH_SOCK)
            ("lockedagent", None, True),  # IdentitiesOnly + encrypted key without .pub: the agent's copy
            ("matched", TESTBED_USER, True),  # `Match user` with the login name gives the port
            ("matched", "root", False),  # no match: port 22, nobody listens
            ("proxybroken", None, False),  # a ProxyCommand that fails: an error, never around it
        ]
        outcomes = [(host, user, works, *_same(cfg, host, user)) for host, user, works in cases]  # all, then assert
        for host, user, works, theirs, ours in outcomes:
            if works:
                assert theirs == 0 and ours == 0, (host, user, ours)
            else:
                assert theirs != 0 and isinstance(ours, AifactoryError), (host, user, ours)
    finally:
        os.kill(agent.pid, signal.SIGTERM)
        agent.wait(timeout=5)
    # without the agent, the IdentityAgent case fails for both
    theirs, ours = _same(cfg, "agented")
    assert theirs != 0 and isinstance(ours, AifactoryError)


def test_certificate_file_on_a_server_that_trusts_only_a_user_ca(
    tmp_path: Path, testbed_client: Path, isolated_ssh_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def keygen(path: Path) -> Path:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        return path

    ca, key = keygen(tmp_path / "user_ca"), keygen(tmp_path / "id_user")
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "cineca", "-n", TESTBED_USER, "-V", "-5m:+1h",
                    str(key) + ".pub"], check=True)  # fmt: skip
    cert = tmp_path / "certs" / "user.cert"  # not beside the key: only CertificateFile finds it
    cert.parent.mkdir()
    (tmp_path / "id_user-cert.pub").rename(cert)
    options = f"AuthorizedKeysFile none\nTrustedUserCAKeys {ca}.pub\nAuthenticationMethods publickey\n"
    with own_sshd(tmp_path / "sshd", options) as server:
        cfg = tmp_path / "ssh_config"
        cfg.write_text(
            server.ssh_config("withcert", key, f"    CertificateFile {cert}\n") + server.ssh_config("nocert", key)
        )
        monkeypatch.setenv("AIFACTORY_SSH_CONFIG", str(cfg))
        theirs, ours = _same(cfg, "withcert")
        assert theirs == 0 and ours == 0, ours
        theirs, ours = _same(cfg, "nocert")  # the plain key alone is not authorized
        assert theirs != 0 and isinstance(ours, AifactoryError)
        # the key and its certificate only in an ssh-agent (as `step ssh login` leaves them)
        agent_key = tmp_path / "agent_key"
        agent_key.write_bytes(key.read_bytes())
        agent_key.chmod(0o600)
        (tmp_path / "agent_key-cert.pub").write_bytes(cert.read_bytes())
        sock = tmp_path / "agent.sock"
        agent = subprocess.Popen(
            ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            for _ in range(100):
                if sock.exists():
                    break
                time.sleep(0.02)
            added = subprocess.run(["ssh-add", str(agent_key)], env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
                                   capture_output=True, text=True)  # fmt: skip
            assert "Certificate added" in added.stderr, added.stderr
            block = server.ssh_config("agentcert", tmp_path / "no-such-key", f"    IdentityAgent {sock}\n")
            cfg.write_text(block.replace("IdentitiesOnly yes", "IdentitiesOnly no"))
            theirs, ours = _same(cfg, "agentcert")
            assert theirs == 0 and ours == 0, ours
        finally:
            os.kill(agent.pid, signal.SIGTERM)
            agent.wait(timeout=5)


@pytest.mark.parametrize("port", ["null", "22"])
def test_sites_check_of_a_profile_that_names_an_included_alias(cfg: Path, tb: Any, aif_home: Path, port: str) -> None:
    """port 22 (what `extends: lumi` brings): the Port of the user's ssh_config alias (2222) wins, as
    for `ssh included` (OpenSSH exit 0 in the cases above); null: ssh_config alone decides."""
    profiles = aif_home / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "viaalias.yaml").write_text(
        f"extends: testbed\nssh: {{host: included, port: {port}, user: null, identity_file: null, known_hosts: null}}\n"
    )
    started = time.monotonic()
    r = tb("sites", "check", "viaalias", "--json", env={"AIFACTORY_SSH_CONFIG": str(cfg), "AIFACTORY_PERSIST": "0"})
    rows = {c["check"]: c for c in json.loads(r.stdout)["checks"]}
    took = time.monotonic() - started
    print(
        f"\nsites check viaalias (profile port {port}, ssh_config Port {TESTBED_SSH_PORT}): exit {r.code}, "
        f"connect {rows['connect']['status']}, {took:.2f} s"
    )
    assert rows["connect"]["status"] == "ok", r.stdout + r.stderr
    assert r.code == 0, r.stdout + r.stderr
