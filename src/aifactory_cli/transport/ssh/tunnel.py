"""Forwarded ports over an `SshTransport`'s one connection: a direct-tcpip channel from the login
node to host:port (what `ssh -L` asks for), so a forward costs no login, through jump hosts too."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aifactory_cli.errors import RemoteError, TunnelRefused

if TYPE_CHECKING:
    import paramiko

    from aifactory_cli.transport.ssh.connection import SshTransport

# what the channel says it comes from (sshd logs it; OpenSSH's ssh -L sends the local client's address)
ORIGIN = ("127.0.0.1", 0)


def open_channel(ssh: SshTransport, host: str, port: int) -> paramiko.Channel:
    """A direct-tcpip channel to `host:port` as the login node sees it; reconnects first if the
    connection is gone (nothing was sent yet). `TunnelRefused` when the login node cannot connect
    there (nothing listens, no route, or the site forbids forwarding)."""
    import paramiko

    for attempt in (1, 2):
        transport = ssh._transport
        if transport is None or not transport.is_active():
            # only to reconnect: the lock may be held for long by a command waiting for its channel
            # (a site's MaxSessions), and a tunnel must not wait behind it
            with ssh._lock:
                if not ssh.connected:
                    ssh._reconnect()
                transport = ssh._transport
        assert transport is not None
        try:
            channel = transport.open_channel("direct-tcpip", (host, port), ORIGIN, timeout=ssh.route.connect_timeout)
        except paramiko.ChannelException as exc:
            raise TunnelRefused(
                f"the login node {ssh.route.target.address} could not connect to {host}:{port}: "
                f"{exc.text or 'refused'} (code {exc.code})",
                "is the job's server listening there yet? (sites that forbid TCP forwarding refuse every port)",
                where=ssh.site,
            ) from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if attempt == 2:
                raise RemoteError(
                    f"cannot open a forwarding channel on {ssh.route.target.address}: {exc}", where=ssh.site
                ) from exc
            with ssh._lock:
                ssh._drop()
            continue
        ssh._tunnels.add(channel)
        return channel
    raise AssertionError("unreachable")
