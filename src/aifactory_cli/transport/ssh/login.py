"""Opening one SSH connection: dial the first hop, tunnel through the jump hosts, and on each server
check the host key and log in. Returns paramiko transports; keeping them is `SshTransport`'s job."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aifactory_cli.errors import HostKeyError, RemoteError
from aifactory_cli.transport.ssh.auth import Authenticator
from aifactory_cli.transport.ssh.hostcert import CERT_ALGORITHMS, CERT_SUFFIX
from aifactory_cli.transport.ssh.hostkeys import check_host_key, known_key_types, load_known_hosts, preferred_key_types

if TYPE_CHECKING:
    import paramiko

    from aifactory_cli.transport.ssh.config import Endpoint, SshRoute


def open_route(route: SshRoute, *, interactive: bool, timeout: float, site: str) -> list[paramiko.Transport]:
    """Log in to every hop of `route`, first hop first; the last transport is the login node's.
    Whatever was opened is closed again when a hop fails."""
    quiet_paramiko()
    opened: list[paramiko.Transport] = []
    try:
        sock: Any = None
        hops = [*route.jumps, route.target]
        for i, hop in enumerate(hops):
            if i == 0 and hop.proxy_command:
                sock = proxy_command(hop, timeout=timeout, site=site)
            elif i == 0:
                sock = tcp_connect(hop, timeout=timeout, site=site)
                if hasattr(socket, "TCP_QUICKACK"):  # Linux
                    sock = QuickAckSocket(sock)
            else:
                sock = tunnel(opened[-1], hops[i - 1], hop, timeout=timeout, site=site)
            pins = route.pins if hop is route.target else ()
            opened.append(ssh_login(hop, sock, pins, interactive=interactive, timeout=timeout, site=site))
    except BaseException:
        for t in reversed(opened):
            with contextlib.suppress(Exception):
                t.close()
        raise
    return opened


def tcp_connect(hop: Endpoint, *, timeout: float, site: str) -> socket.socket:
    hint = (
        f"check the host name and port in the profile / ~/.ssh/config and that this machine can "
        f"reach the site (VPN, firewall); `ssh -v -p {hop.port} {hop.user}@{hop.hostname}` says more"
    )
    try:
        sock = socket.create_connection((hop.hostname, hop.port), timeout=timeout)
    except socket.gaierror as exc:
        raise RemoteError(
            f"cannot resolve the host name {hop.hostname} ({hop.address}): {exc.strerror}", hint, where=site
        ) from exc
    except ConnectionRefusedError as exc:
        raise RemoteError(f"connection refused by {hop.address} (no SSH server listening?)", hint, where=site) from exc
    except TimeoutError as exc:
        raise RemoteError(f"timed out after {timeout:g} s connecting to {hop.address}", hint, where=site) from exc
    except OSError as exc:
        raise RemoteError(f"cannot connect to {hop.address}: {exc.strerror or exc}", hint, where=site) from exc
    # paramiko leaves Nagle on: ~40 ms lost per command to Nagle + delayed ACK
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


def proxy_command(hop: Endpoint, *, timeout: float, site: str) -> paramiko.ProxyCommand:
    """ssh_config ProxyCommand: the command's stdin/stdout is the connection. Run by the shell as
    OpenSSH does (`sh -c 'exec CMD'`); the tokens were expanded from checked host/user names."""
    import shlex

    import paramiko

    shell = os.environ.get("SHELL") or "/bin/sh"
    try:
        proxy = paramiko.ProxyCommand(shlex.join([shell, "-c", f"exec {hop.proxy_command}"]))
    except (paramiko.SSHException, OSError) as exc:
        raise RemoteError(
            f"cannot start the ProxyCommand for {hop.alias}: {exc}",
            "check ProxyCommand in your ssh_config (`ssh -G " + hop.alias + " | grep proxycommand`)",
            where=site,
        ) from exc
    proxy.settimeout(timeout)
    return proxy


def tunnel(via: paramiko.Transport, jump: Endpoint, hop: Endpoint, *, timeout: float, site: str) -> paramiko.Channel:
    import paramiko

    try:
        return via.open_channel("direct-tcpip", (hop.hostname, hop.port), ("127.0.0.1", 0), timeout=timeout)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        detail = getattr(exc, "text", None) or str(exc) or type(exc).__name__
        raise RemoteError(
            f"the jump host {jump.address} cannot open a connection to {hop.address}: {detail}",
            "check the login node's host name/port as seen from the jump host, and that the jump host "
            "allows TCP forwarding",
            where=site,
        ) from exc


def ssh_login(
    hop: Endpoint, sock: Any, pins: tuple[str, ...], *, interactive: bool, timeout: float, site: str
) -> paramiko.Transport:
    import paramiko

    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = timeout
        transport.handshake_timeout = timeout
        transport.auth_timeout = 600.0 if interactive else max(timeout, 30.0)
        known = load_known_hosts(hop.known_hosts_files)
        options = transport.get_security_options()
        types = preferred_key_types(options.key_types, known_key_types(hop, known))
        if any(hosts.authorities_for(hop.known_hosts_name) for _, hosts in known):  # ask for its host certificate
            types = [a for a in CERT_ALGORITHMS if a in transport._key_info] + types  # type: ignore[attr-defined]
        options.key_types = types
        options.ciphers = aead_first(options.ciphers)
        try:
            transport.start_client(timeout=timeout)
            server_key = transport.get_remote_server_key()  # "No existing session" if the link died
        except (paramiko.SSHException, EOFError, OSError) as exc:
            via = f" (through the ProxyCommand `{hop.proxy_command}`)" if hop.proxy_command else ""
            raise RemoteError(
                f"SSH handshake with {hop.address}{via} failed: {_readable(exc)}",
                f"check the ProxyCommand in your ssh_config: `ssh -v {hop.alias}` shows what it does"
                if hop.proxy_command
                else f"is there an SSH server on {hop.address}? try `ssh -v -p {hop.port} {hop.hostname}`",
                where=site,
            ) from exc
        try:
            blob = server_key.public_blob  # the certificate, when a certified host key was negotiated
            certified = (transport.host_key_type or "").endswith(CERT_SUFFIX) and blob is not None
            cert_blob = blob.key_blob if certified and blob is not None else None
            check_host_key(hop, server_key.get_name(), server_key.asbytes(), known, pins, cert_blob)
        except HostKeyError as exc:
            exc.where = site
            raise
        Authenticator(transport, hop, interactive, site).run()
        leave_rekeying_to_server(transport)
        return transport
    except BaseException:
        transport.close()
        raise


def aead_first(ciphers: Sequence[str]) -> tuple[str, ...]:
    """paramiko's ciphers with AES-GCM first, as OpenSSH orders them (after chacha20, which paramiko
    lacks): GCM authenticates in the cipher, in C, where paramiko's default aes128-ctr pays a Python
    HMAC per packet (7 % of a fetch's samples). The server picks the first it also has; nothing is
    removed, so a server without GCM negotiates as before."""
    gcm = tuple(c for c in ciphers if c.endswith("-gcm@openssh.com"))
    return gcm + tuple(c for c in ciphers if c not in gcm)


class QuickAckSocket:
    """A socket that ACKs at once (Linux TCP_QUICKACK, re-armed before every read).

    sshd leaves Nagle on for sessions without a terminal, and a jump host's sshd forwards each small
    SSH packet with Nagle on; against our delayed ACKs that costs ~40 ms. Measured on the test bed:
    the first command on a new connection 54 -> 17 ms; every command through a jump host
    52 -> 10 ms (OpenSSH `ssh -J` with ControlMaster shows the same 40 ms stall)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def recv(self, n: int) -> bytes:
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return self._sock.recv(n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def quiet_paramiko() -> None:
    """paramiko logs errors from its own thread (e.g. a dropped connection); without a handler
    Python would print them on stderr. They become our exceptions instead; `--debug` logging still
    sees them through propagation."""
    logger = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


# paramiko rekeys on its own after 512 MiB in either direction. A rekey that this side starts
# deadlocks paramiko's transport thread when the server closes a channel before it has seen our
# KEXINIT: the thread answers the CHANNEL_CLOSE with `_send_user_message`, which waits (30 s,
# `clear_to_send_timeout`) for the key exchange that only that same thread can finish; then the
# connection dies ("Key-exchange timed out waiting for key negotiation"). A 1 GiB fetch ends right
# at paramiko's second rekey, so it stalled ~30 s or failed most times. A rekey the server starts is
# safe (after its KEXINIT it sends nothing else until the new keys), and OpenSSH servers rekey by
# their RekeyLimit (by default 1 GiB for 8-byte-block ciphers, 64 GiB for AES): so this side
# rekeys only past twice OpenSSH's largest default, should the server never do it.
CLIENT_REKEY_BYTES = 2**37  # 128 GiB
CLIENT_REKEY_PACKETS = 2**31


def leave_rekeying_to_server(transport: paramiko.Transport) -> None:
    packetizer = transport.packetizer
    packetizer.REKEY_BYTES = CLIENT_REKEY_BYTES
    packetizer.REKEY_PACKETS = CLIENT_REKEY_PACKETS


def _readable(exc: BaseException) -> str:
    """paramiko's text, readable: "Error reading SSH protocol banner[Errno 104] ..." gets its ": "."""
    import re

    text = str(exc) or type(exc).__name__
    return re.sub(r"(?<=\S)\[Errno ", ": [Errno ", text)
