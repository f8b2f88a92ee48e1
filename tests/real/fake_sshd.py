"""A small paramiko SSH server for transport tests: what the test bed's sshd cannot do (MFA
prompts, a noisy login shell, no SFTP, a site that goes away)."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from aifactory_cli.transport.ssh.hostkeys import fingerprint
from aifactory_cli.transport.ssh.settings import SshSettings


def write_key(path: Path) -> Path:
    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    path.chmod(0o600)
    return path


class LoginNode(paramiko.ServerInterface):
    """Public key, then (if `mfa`) a keyboard-interactive 'Verification code' prompt (answer
    123456). Commands run in bash; with `banner`, after the noise a chatty ~/.bashrc prints."""

    BANNER = b"Welcome to FakeHPC!\nLast login: yesterday"  # no newline at the end, on purpose
    STDERR_NOISE = b"bash: module: command not found\n"

    def __init__(self, client_key: bytes, mfa: bool, banner: bool = False) -> None:
        self.client_key, self.mfa, self.banner, self.key_ok = client_key, mfa, banner, False

    def get_allowed_auths(self, username: str) -> str:
        return "keyboard-interactive" if self.key_ok and self.mfa else "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if key.asbytes() != self.client_key:
            return paramiko.AUTH_FAILED
        self.key_ok = True
        return paramiko.AUTH_PARTIALLY_SUCCESSFUL if self.mfa else paramiko.AUTH_SUCCESSFUL

    def check_auth_interactive(self, username: str, submethods: str) -> Any:
        if not self.key_ok:
            return paramiko.AUTH_FAILED
        return paramiko.InteractiveQuery("FakeHPC MFA", "", ("Verification code: ", False))

    def check_auth_interactive_response(self, responses: list[str]) -> int:
        return paramiko.AUTH_SUCCESSFUL if list(responses) == ["123456"] else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes | str) -> bool:
        text = command.decode() if isinstance(command, bytes) else command
        threading.Thread(target=self._exec, args=(channel, text), daemon=True).start()
        return True

    def _exec(self, channel: paramiko.Channel, command: str) -> None:
        proc = subprocess.run(["bash", "-c", command], capture_output=True, timeout=30)
        if self.banner:
            channel.sendall(self.BANNER)
            channel.sendall_stderr(self.STDERR_NOISE)
        channel.sendall(proc.stdout)
        channel.sendall_stderr(proc.stderr)
        channel.send_exit_status(proc.returncode)
        channel.shutdown_write()
        channel.close()


class FakeServer:
    """A paramiko SSH server on 127.0.0.1 (the test bed's sshd is key-only; this one can ask for
    MFA, print login noise, lack SFTP, and go away). `mfa`/`banner` apply to the next logins."""

    def __init__(self, tmp_path: Path, mfa: bool, banner: bool = False) -> None:
        self.host_key = paramiko.Ed25519Key.from_path(write_key(tmp_path / "host_key"))
        self.client_key_path = write_key(tmp_path / "id_client")
        self.client_key = paramiko.PKey.from_path(self.client_key_path).asbytes()
        self.mfa = mfa
        self.banner = banner
        self.logins = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.transports: list[paramiko.Transport] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        (tmp_path / "known_hosts_fake").write_text("")
        self.settings = SshSettings(
            host="127.0.0.1",
            port=self.port,
            user="alice",
            identity_file=str(self.client_key_path),
            known_hosts=str(tmp_path / "known_hosts_fake"),
            host_key_fingerprints=[fingerprint(self.host_key.asbytes())],
            connect_timeout=5,
        )

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            self.logins += 1
            t = paramiko.Transport(conn)
            t.add_server_key(self.host_key)
            t.start_server(server=LoginNode(self.client_key, self.mfa, self.banner))
            self.transports.append(t)
            threading.Thread(target=accept_channels, args=(t,), daemon=True).start()

    def stop(self) -> None:
        """The site goes away: open connections drop, new ones are refused."""
        self.stopped.set()
        self.thread.join()
        self.listener.close()
        for t in self.transports:
            t.close()


def accept_channels(t: paramiko.Transport) -> None:
    channels = []  # keep them referenced: a collected Channel closes itself
    while t.is_active():
        channel = t.accept(0.5)
        if channel is not None:
            channels.append(channel)
