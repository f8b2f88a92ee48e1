"""The OpenSSH fast path for bulk transfers: a spec's large `data:` files and `fetch`'s large files.

paramiko encrypts in Python: on the loopback bed a 1 GiB upload ran at 0.54x scp's speed and a fetch
at 0.69x. When the user's own OpenSSH already holds a live ControlMaster for the site's login node
(ssh_config gives it a ControlPath, and `ssh -O check` answers), these commands go through that
master with the `ssh` binary instead:

    ssh -S CONTROLPATH -o ControlMaster=no -o BatchMode=yes -o ProxyCommand=false ... HOST -- COMMAND

No second login and no prompt: the master is logged in already, and OpenSSH checked its host key.
`ProxyCommand=false` makes sure that a master that went away between the check and the command is
an error (exit 255), never a fresh login of ssh's own. The user's master is not used where: no `ssh`
binary, no ControlPath (or `none`), no master answering, the profile pins host-key fingerprints
(OpenSSH cannot check pins), ssh_config turns StrictHostKeyChecking off, or AIFACTORY_OPENSSH_MUX=0
(settings.py). Without one, a transfer of at least 64 MiB goes through a master of aifactory's own
(`ownmaster.py`: keys only, the host key that aifactory's connection verified), where it may log in.

`bulk_transport(transport, size)` gives the runner for one transfer: an `OpenSshMux` (same `run` and
`run_to_file` as a transport) or the transport itself. The answer is kept per transport object.
The command's output is cut at marker lines as over paramiko (`streams.MarkerCut`), so a chatty
login shell does not end up in a fetched file. An `ssh` that dies mid-transfer (exit 255, a signal)
is a RemoteError like a lost paramiko connection: partial copies are kept and the next run resumes.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aifactory_cli import settings as app_settings
from aifactory_cli.errors import AifactoryError, RemoteError
from aifactory_cli.transport import Command, CommandResult, LocalFile, Progress, Stdin, to_shell
from aifactory_cli.transport.ssh.muxio import FileProgress, feed_pipe, grow_pipe
from aifactory_cli.transport.ssh.openssh import ssh_binary
from aifactory_cli.transport.ssh.streams import MarkerCut, marked
from aifactory_cli.transport.tofile import FileSink, ToFile

if TYPE_CHECKING:
    from aifactory_cli.transport import Transport
    from aifactory_cli.transport.ssh.openssh import HostOptions
    from aifactory_cli.transport.ssh.settings import SshSettings

OFF_ENV = app_settings.OPENSSH_MUX  # "0" / "no" / "off": never use the fast path
CHECK_TIMEOUT = 5.0  # seconds for `ssh -O check`
READ = 1 << 20  # one read of ssh's stdout
LOST_RC = 255  # ssh's own failure (also a remote command's `exit 255`, which ours never use)
_chosen: weakref.WeakKeyDictionary[Any, OpenSshMux | None] = weakref.WeakKeyDictionary()
_chosen_lock = threading.Lock()


@dataclass(frozen=True)
class MuxRoute:
    """The user's master for a host: its ControlPath and how to name the host to `ssh`."""

    binary: str
    control_path: str
    host: str
    config_file: Path | None = None
    user: str | None = None
    port: int | None = None

    def _common(self) -> list[str]:
        argv = [self.binary]
        if self.config_file is not None:
            argv += ["-F", str(self.config_file) if self.config_file.is_file() else os.devnull]
        argv += ["-S", self.control_path, "-o", "BatchMode=yes"]
        if self.user:
            argv += ["-l", self.user]
        if self.port:
            argv += ["-p", str(self.port)]
        return argv

    def check_argv(self) -> list[str]:
        return [*self._common(), "-O", "check", "--", self.host]

    def exit_argv(self) -> list[str]:
        return [*self._common(), "-O", "exit", "--", self.host]

    def command_argv(self, line: str) -> list[str]:
        """`line` run on the host through the master; never a login of its own, never a prompt."""
        return [
            *self._common(),
            *("-o", "ControlMaster=no"),
            *("-o", "ProxyCommand=false"),  # the master is gone: fail, do not log in anew
            *("-o", "ClearAllForwardings=yes", "-o", "RemoteCommand=none", "-o", "RequestTTY=no"),
            *("-o", "LogLevel=ERROR", "-o", "PermitLocalCommand=no"),
            *("-T", "-x", "-a", "-e", "none"),
            "--",
            self.host,
            line,
        ]


def disabled() -> bool:
    return not app_settings.current().openssh_mux


def route_for(settings: SshSettings, options: HostOptions, binary: str, config_file: Path | None) -> MuxRoute | None:
    """The master's route when the settings allow the fast path (no pins, host keys checked by
    OpenSSH, a ControlPath whose socket exists); None otherwise. Asks nothing of the master yet."""
    if settings.host_key_fingerprints or options.source != "ssh -G" or not settings.host:
        return None
    if (options.get("stricthostkeychecking") or "ask").lower() in ("no", "off", "false"):
        return None
    path = options.get("controlpath")
    if path is None or not os.path.exists(path):
        return None
    port = options.get("port")
    return MuxRoute(
        binary,
        path,
        settings.host,
        config_file,
        user=options.get("user"),
        port=int(port) if port and port.isdigit() else None,
    )


def master_alive(route: MuxRoute) -> bool:
    """`ssh -O check`: a master answers on the ControlPath."""
    try:
        done = subprocess.run(
            route.check_argv(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=CHECK_TIMEOUT,
            start_new_session=True,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _resolved(settings: SshSettings, *, pins_ok: bool = False) -> tuple[str, HostOptions, Path | None] | None:
    """The `ssh` binary, the login node's ssh_config options and the config file, or None where
    the fast path is off or cannot be (see the module docstring). `pins_ok`: the profile's pinned
    fingerprints do not stand in the way (aifactory's own master gets the key they verified)."""
    if disabled() or not settings.host or (settings.host_key_fingerprints and not pins_ok):
        return None
    binary = ssh_binary()
    if binary is None:
        return None
    from aifactory_cli.transport.ssh.config import ssh_config_override, target_options

    try:
        return binary, target_options(settings), ssh_config_override()
    except AifactoryError:
        return None


def find_master(settings: SshSettings) -> MuxRoute | None:
    """The user's live ControlMaster for the site's login node, or None (see the module docstring)."""
    resolved = _resolved(settings)
    if resolved is None:
        return None
    binary, options, config_file = resolved
    route = route_for(settings, options, binary, config_file)
    return route if route is not None and master_alive(route) else None


def own_master(transport: Transport, settings: SshSettings) -> MuxRoute | None:
    """A master of aifactory's own for this process (`ownmaster.py`), or None where it may not log in."""
    resolved = _resolved(settings, pins_ok=True)
    if resolved is None or settings.host is None:
        return None
    binary, options, config_file = resolved
    from aifactory_cli.paths import state_dir
    from aifactory_cli.transport.ssh import ownmaster

    verified = getattr(transport, "host_key", None)  # what aifactory's own connection checked
    try:
        host_key = verified() if callable(verified) else None
    except AifactoryError:
        return None
    if host_key is None or not ownmaster.usable(settings, options, host_key):
        return None
    return ownmaster.start_master(
        binary,
        settings.host,
        options,
        host_key,
        config_file=config_file,
        state=state_dir() / "ssh",
        connect_timeout=settings.connect_timeout,
        identity=settings.identity_file,
    )


def bulk_transport(transport: Transport, size: int = 0) -> Transport | OpenSshMux:
    """The runner for a bulk transfer of `size` bytes over `transport`: the OpenSSH fast path when
    the user's master for the same host is live, or (`size` at least `ownmaster.MIN_BYTES`) through
    a master of aifactory's own; else `transport` itself (any transport other than SSH's)."""
    settings = getattr(transport, "settings", None)
    if getattr(transport, "name", None) != "ssh" or getattr(settings, "host", None) is None:
        return transport
    from aifactory_cli.transport.ssh.ownmaster import MIN_BYTES

    with _chosen_lock:
        found = _chosen.get(transport)
        if found is None and (transport not in _chosen or size >= MIN_BYTES):
            route = find_master(settings)  # type: ignore[arg-type]
            own = False
            if route is None and size >= MIN_BYTES:
                route, own = own_master(transport, settings), True  # type: ignore[arg-type]
            found = OpenSshMux(route, site=str(getattr(transport, "site", "")), own=own) if route else None
            with contextlib.suppress(TypeError):  # not weak-referenceable: ask again next time
                _chosen[transport] = found
    return found if found is not None else transport


def bulk_via(runner: object) -> str | None:
    """What to tell the user about the path a transfer took: None for the transport's own."""
    return runner.via if isinstance(runner, OpenSshMux) else None


class OpenSshMux:
    """`run` / `run_to_file` through the user's ControlMaster (an `ssh` process per command)."""

    name = "openssh-mux"

    def __init__(self, route: MuxRoute, *, site: str, own: bool = False) -> None:
        self.route = route
        self.site = site
        self.own = own  # a master of aifactory's own (ownmaster.py), not the user's
        self.commands_run = 0

    @property
    def via(self) -> str:
        if self.own:
            return "an OpenSSH master of aifactory's own (keys only, the host key it had verified)"
        return f"the OpenSSH ControlMaster at {self.route.control_path}"

    @property
    def label(self) -> str:
        """The master, named in a message."""
        return "aifactory's own OpenSSH master" if self.own else self.via

    def run(self, command: Command, *, stdin: Stdin = None, timeout: float | None = None) -> CommandResult:
        out = io.BytesIO()
        rc, err, noise = self.stream(command, out.write, stdin=stdin, timeout=timeout)
        return CommandResult(rc, out.getvalue().decode(errors="replace"), err.decode(errors="replace"), noise)

    def run_to_file(
        self,
        command: Command,
        local: Path,
        *,
        append: bool = False,
        digest: bool = False,
        stdin: bytes | None = None,
        progress: Progress | None = None,
    ) -> ToFile:
        with FileSink(local, append=append, digest=digest, progress=progress) as sink:
            rc, err, _ = self.stream(command, sink, stdin=stdin)
        return sink.result(rc, err)

    def stream(
        self, command: Command, stdout: Callable[[bytes], object], *, stdin: Stdin = None, timeout: float | None = None
    ) -> tuple[int, bytes, int]:
        """Run `command` in the login shell through the master, its stdout (after the marker) into
        `stdout`: (exit status, stderr after the marker, bytes the login shell printed before)."""
        line = to_shell(command)
        mark, wrapped = marked(line)
        # a local file is ssh's stdin itself: no byte of it passes through Python (1 GiB through a
        # live master: 2.5-2.8 s so, about 1 s more when this process copied it into ssh's pipe)
        with contextlib.ExitStack() as files:
            source: Any = subprocess.PIPE if stdin is not None else subprocess.DEVNULL
            if isinstance(stdin, LocalFile):
                source = files.enter_context(open(stdin.path, "rb"))
                source.seek(stdin.offset)
            try:
                proc = subprocess.Popen(
                    self.route.command_argv(wrapped),
                    stdin=source,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    bufsize=0,
                    start_new_session=True,  # stopped by us (Ctrl-C here kills it below), not by the tty
                )
            except OSError as exc:
                raise RemoteError(f"cannot run {self.route.binary}: {exc}", where=self.site) from exc
            if isinstance(stdin, LocalFile):
                return self._await(proc, line, mark, stdout, timeout, FileProgress(source, stdin))
            return self._await(proc, line, mark, stdout, timeout, stdin)

    def _await(
        self,
        proc: subprocess.Popen[bytes],
        line: str,
        mark: str,
        stdout: Callable[[bytes], object],
        timeout: float | None,
        stdin: Stdin | FileProgress,
    ) -> tuple[int, bytes, int]:
        self.commands_run += 1
        err_buf = io.BytesIO()
        out_cut = MarkerCut(mark.encode(), stdout)
        err_cut = MarkerCut(mark.encode(), err_buf.write)
        sink_errors: list[BaseException] = []
        timed_out = threading.Event()

        def pump(fd: int, cut: MarkerCut) -> None:
            try:
                while data := os.read(fd, READ):
                    cut.feed(data)
                cut.finish()
            except BaseException as exc:  # a failing sink (disk full...): stop the command
                sink_errors.append(exc)
                with contextlib.suppress(OSError):
                    proc.kill()

        assert proc.stdout is not None and proc.stderr is not None
        grow_pipe(proc.stdout.fileno())
        readers = [
            threading.Thread(target=pump, args=(proc.stdout.fileno(), out_cut), daemon=True),
            threading.Thread(target=pump, args=(proc.stderr.fileno(), err_cut), daemon=True),
        ]
        for t in readers:
            t.start()

        def on_timeout() -> None:
            timed_out.set()
            with contextlib.suppress(OSError):
                proc.kill()

        timer = threading.Timer(timeout, on_timeout) if timeout is not None else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            if isinstance(stdin, FileProgress):
                stdin.watch(proc)
            else:
                feed_pipe(proc, stdin, READ)
            for t in readers:
                t.join()
            rc = proc.wait()
            if isinstance(stdin, FileProgress):
                stdin.report()
        except BaseException:  # the stdin writer failed locally, Ctrl-C...: stop ssh (and so the command)
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
            for t in readers:  # they see the end of ssh's pipes now; not closed under them
                t.join(5)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            for fh in (proc.stdout, proc.stderr):
                fh.close()
        if sink_errors:
            raise sink_errors[0]
        err = err_buf.getvalue()
        if timed_out.is_set():
            raise RemoteError(
                f"command timed out after {timeout:g} s on {self.site} (it may still be running there): {line[:200]}",
                where=self.site,
            )
        if rc == LOST_RC or rc < 0:
            raise self._lost(rc, err, line, started=out_cut.found or err_cut.found)
        return rc, err, out_cut.noise_bytes + err_cut.noise_bytes

    def _lost(self, rc: int, err: bytes, line: str, *, started: bool) -> RemoteError:
        why = " ".join(err.decode(errors="replace").split())[-300:] or (
            f"killed by signal {-rc}" if rc < 0 else f"exit {rc}"
        )
        # the command (a bulk transfer's: its caller says which file) only in its first words
        what = line if len(line) <= 80 else line[:77] + "..."
        if not started:
            return RemoteError(
                f"{self.label} did not run a command ({why}); nothing ran on the site: {what}",
                "run it again: without a live master aifactory uses its own connection",
                where=self.site,
            )
        return RemoteError(
            f"the OpenSSH connection through {self.label} failed while a command was running ({why}); "
            f"its outcome is unknown: {what}",
            "run it again: a cut transfer resumes where it stopped",
            where=self.site,
        )
