"""An OpenSSH server a test starts for itself (never the shared bed's): on its own 127.0.0.x
address and free port, with the bed's host key and user, and the options the test gives
(`MaxSessions 1`, `TrustedUserCAKeys`...; an option given replaces the base line of the same keyword,
e.g. `UsePAM yes`). LogLevel VERBOSE, so `connections()` counts the TCP connections it accepted
("Connection from" lines). `program`: the path sshd is started by (a symlink to it gives it its own
PAM service name, which is the program's name)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.real.conftest import TESTBED_DIR, TESTBED_USER

HOST_KEY = TESTBED_DIR / "ssh" / "ssh_host_ed25519_key"
SSHD = "/usr/sbin/sshd"


@dataclass
class OwnSshd:
    address: str
    port: int
    log: Path
    known_hosts: Path

    def connections(self) -> int:
        return self.log.read_text(errors="replace").count("Connection from")

    def ssh_config(self, alias: str, key: Path, extra: str = "", batch: bool = True) -> str:
        """A `Host alias` block for this server (OpenSSH and aifactory read the same)."""
        return (
            f"Host {alias}\n    HostName {self.address}\n    Port {self.port}\n    User {TESTBED_USER}\n"
            f"    IdentityFile {key}\n    IdentitiesOnly yes\n    UserKnownHostsFile {self.known_hosts}\n"
            f"    GlobalKnownHostsFile /dev/null\n    StrictHostKeyChecking yes\n"
            f"{'    BatchMode yes' + chr(10) if batch else ''}{extra}"
        )


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def own_sshd(tmp: Path, options: str, address: str = "127.0.0.9", program: Path | str = SSHD) -> Iterator[OwnSshd]:
    """Start `sshd -D` with `options` added to a bed-like config; stopped (by its pid) on exit."""
    if not HOST_KEY.is_file():
        raise AssertionError(f"no test bed host key {HOST_KEY}: run tests/testbed/start.sh")
    tmp.mkdir(parents=True, exist_ok=True)
    port = _free_port(address)
    config = tmp / "sshd_config"
    base = (
        f"Port {port}\nListenAddress {address}\nHostKey {HOST_KEY}\nPidFile {tmp / 'sshd.pid'}\n"
        f"AllowUsers {TESTBED_USER}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin no\nUsePAM no\nStrictModes yes\nPrintMotd no\n"
        "AllowTcpForwarding yes\nLogLevel VERBOSE\nSubsystem sftp internal-sftp\n"
    )
    given = {line.split()[0].lower() for line in options.splitlines() if line.strip()}
    kept = "".join(f"{line}\n" for line in base.splitlines() if line.split()[0].lower() not in given)
    config.write_text(kept + options)
    known = tmp / "known_hosts"
    key_line = " ".join(HOST_KEY.with_suffix(".pub").read_text().split()[:2])
    known.write_text(f"[{address}]:{port} {key_line}\n")
    log = tmp / "sshd.log"
    check = subprocess.run([str(program), "-t", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(program), "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 10
        while "Server listening" not in log.read_text(errors="replace"):  # no probe: it would count
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"sshd on {address}:{port} did not start: {log.read_text()}"
            time.sleep(0.02)
        yield OwnSshd(address, port, log, known)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
