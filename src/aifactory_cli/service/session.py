"""The session: the resources one CLI command uses, and the door to the use cases.

One `Service` per CLI command: it opens the store, loads the user config and site profiles, and
opens at most one backend (one connection) per site, lazily, and closes them at the end.

The use cases live in their own modules, each a pipeline down the layers: `submit` (prepare ->
stage and sbatch -> record), `settle` (was an interrupted submission queued?), `track` (refresh,
status, cancel, wait, logs), `files` (fetch), `sync`. The methods below only delegate to them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aifactory_cli import states
from aifactory_cli.errors import AifactoryError, BadInput, NotFound, RemoteError
from aifactory_cli.jobs.model import Job
from aifactory_cli.jobs.store import Store

# Only the store is needed by `list` and `status --cached`: everything else (the use-case modules,
# pydantic models, Jinja, the SSH stack) is imported where it is used, so those commands start fast.
if TYPE_CHECKING:
    from aifactory_cli.backends.base import Backend
    from aifactory_cli.service.files import Fetched
    from aifactory_cli.service.submit import Prepared
    from aifactory_cli.sites.profile import LoadedProfile
    from aifactory_cli.sites.resolve import Overrides
    from aifactory_cli.sites.userconfig import UserConfig
    from aifactory_cli.spec.model import LoadedSpec
    from aifactory_cli.transport import Transport

Notify = Callable[[str], None]
# (site, its profile) -> the transport to reach it; the unit tier passes a fake one
TransportFactory = Callable[[str, "LoadedProfile"], "Transport"]


def _quiet(_: str) -> None:
    pass


class Service:
    def __init__(
        self,
        notify: Notify | None = None,
        progress_factory: Any = None,
        interactive: bool | None = None,
        transport_factory: TransportFactory | None = None,
    ) -> None:
        self.notify = notify or _quiet
        self.progress_factory = progress_factory
        self.interactive = interactive
        self.transport_factory = transport_factory
        self._store: Store | None = None
        self._config: UserConfig | None = None
        self._backends: dict[str, Backend] = {}
        self._profiles: dict[str, LoadedProfile] = {}
        self._prewarm: dict[str, tuple[Any, list[BaseException]]] = {}

    # --- resources --------------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(notify=self.notify)  # `find` says which job a name meant
        return self._store

    @property
    def config(self) -> UserConfig:
        if self._config is None:
            from aifactory_cli.sites.userconfig import load_user_config

            self._config, _ = load_user_config()
        return self._config

    def profile(self, site: str) -> LoadedProfile:
        if site not in self._profiles:
            from aifactory_cli.sites.profile import load_profile

            self._profiles[site] = load_profile(site)
        return self._profiles[site]

    def known_profile(self, site: str) -> LoadedProfile | None:
        """The site's profile, or None when there is no such site (e.g. its profile was removed)."""
        try:
            return self.profile(site)
        except NotFound:
            return None

    def site_or_default(self, site: str | None) -> str:
        from aifactory_cli.sites.userconfig import default_site

        return site or default_site(self.config)

    def backend(self, site: str) -> Backend:
        if site in self._backends:
            return self._backends[site]
        from aifactory_cli.backends.local import LocalBackend
        from aifactory_cli.backends.slurm import SlurmBackend

        loaded = self.profile(site)
        if loaded.profile.scheduler == "local":
            from aifactory_cli.transport.local import LocalTransport

            backend: Backend = LocalBackend(loaded, LocalTransport(), lambda: self.store.next_counter("local_job_id"))
        elif self.transport_factory is not None:
            backend = SlurmBackend(loaded, self.transport_factory(site, loaded), lambda: self.store.site_facts(site))
        else:
            from aifactory_cli.transport.agent.client import make_transport

            settings = self._ssh_settings(site, loaded)
            if not settings.host:
                raise BadInput(
                    f"site '{site}' has no ssh.host in its profile", f"set sites.{site}.ssh_host in the config file"
                )
            backend = SlurmBackend(
                loaded,
                make_transport(settings, site=site, interactive=self.interactive, persist=self._persist(site)),
                lambda: self.store.site_facts(site),
            )
        self._backends[site] = backend
        return backend

    def _persist(self, site: str) -> float:
        """How long a connection agent keeps the site's connection: env, then config, then profile."""
        from aifactory_cli.settings import current

        return current().persist_for(self.config.for_site(site).persist, self.profile(site).profile.ssh.persist)

    def _ssh_settings(self, site: str, loaded: LoadedProfile) -> Any:
        """The profile's SSH settings, then the user config, then the environment (CI runners get
        the key path and known_hosts content as secrets)."""
        import os

        from aifactory_cli.settings import current

        env = current()
        settings = loaded.profile.ssh.model_copy()
        mine = self.config.for_site(site)
        settings.user = env.ssh_user_for(mine.user, settings.user)
        settings.host = mine.ssh_host or settings.host
        settings.identity_file = env.ssh_key_for(mine.identity_file, settings.identity_file)
        content = env.ssh_known_hosts
        if content:
            from aifactory_cli import paths

            path = paths.ensure_private_dir(paths.state_dir()) / "known_hosts.env"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(content.rstrip("\n") + "\n")
            settings.known_hosts = str(path)
        return settings

    def prewarm(self, site: str | None) -> None:
        """Start connecting to a remote site in the background, so the network round trips of
        the login overlap with loading, resolving and rendering the spec."""
        import threading

        try:
            name = self.site_or_default(site)
            if self.profile(name).profile.scheduler == "local" or name in self._prewarm:
                return
            transport = self.backend(name).transport
        except AifactoryError:
            return  # reported properly when the command gets there
        errors: list[BaseException] = []

        def connect() -> None:
            try:
                transport.connect()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=connect, name=f"connect-{name}", daemon=True)
        thread.start()
        self._prewarm[name] = (thread, errors)

    def join_prewarm(self, site: str) -> None:
        """Wait for the background login of `site`; its failure is raised here (nothing was sent)."""
        entry = self._prewarm.pop(site, None)
        if entry is None:
            return
        thread, errors = entry
        thread.join()
        if errors:
            exc = errors[0]
            if isinstance(exc, RemoteError):
                exc.queued = "no"
            raise exc

    def progress(self, total: int, what: str) -> Any:
        """A progress context (its value: a callback taking a byte count), or None."""
        return self.progress_factory(total, what) if self.progress_factory else None

    def close(self) -> None:
        for backend in self._backends.values():
            with contextlib.suppress(Exception):
                backend.close()
        self._backends.clear()
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the use cases (see the module docstring) -------------------------------------------------

    def prepare(
        self,
        spec_path: str | Path,
        site: str | None,
        overrides: Overrides | None = None,
        after: list[str] | None = None,
        loaded_spec: LoadedSpec | None = None,
    ) -> Prepared:
        from aifactory_cli.service import submit as submitting

        return submitting.prepare(self, spec_path, site, overrides, after, loaded_spec)

    def submit(self, prepared: Prepared) -> Job:
        from aifactory_cli.service import submit as submitting

        return submitting.submit(self, prepared)

    def settle_in_doubt(self, site: str, provenance: str | None = None, spec_path: str | None = None) -> Job | None:
        from aifactory_cli.service import settle

        return settle.settle(self, site, provenance, spec_path)

    def jobs(self, refs: list[str]) -> list[Job]:
        from aifactory_cli.service import track

        return track.jobs(self, refs)

    def refresh(self, jobs: list[Job], force: bool = False) -> list[Job]:
        from aifactory_cli.service import track

        return track.refresh(self, jobs, force)

    def cached_status(self, recent_hours: float = 24.0) -> list[Job]:
        from aifactory_cli.service import track

        return track.cached_status(self, recent_hours)

    def status(self, refs: list[str], force: bool = True, recent_hours: float = 24.0) -> list[Job]:
        from aifactory_cli.service import track

        return track.status(self, refs, force, recent_hours)

    def cancel(self, refs: list[str]) -> list[Job]:
        from aifactory_cli.service import track

        return track.cancel(self, refs)

    def wait(
        self,
        refs: list[str] | None = None,
        jobs: list[Job] | None = None,
        timeout: float | None = None,
        on_change: Callable[[Job], None] | None = None,
        min_interval: float = 0.5,
        max_interval: float = 30.0,
    ) -> list[Job]:
        from aifactory_cli.service import track

        jobs = jobs if jobs is not None else track.jobs(self, refs or [])
        return track.wait(self, jobs, timeout, on_change, min_interval, max_interval)

    def logs(self, ref: str, stderr: bool = False, task: int | str | None = None) -> tuple[Job, bytes]:
        from aifactory_cli.service import track

        return track.logs(self, ref, stderr, task)

    def follow(
        self, ref: str, stderr: bool = False, task: int | str | None = None, interval: float = 1.0
    ) -> Iterator[bytes]:
        from aifactory_cli.service import track

        return track.follow(self, ref, stderr, task, interval)

    def follow_both(self, ref: str, interval: float = 1.0) -> Iterator[tuple[str, bytes]]:
        """stdout and stderr as they grow: ("stdout" | "stderr", bytes) until the job ends."""
        from aifactory_cli.service import track

        return track.follow_both(self, ref, interval)

    def fetch(
        self, ref: str, dest: Path | None = None, patterns: list[str] | None = None, tasks: list[str] | None = None
    ) -> Fetched:
        from aifactory_cli.service import files

        return files.fetch(self, ref, dest, patterns, tasks)

    def execute(
        self, ref: str, argv: list[str], node: str | None = None, all_nodes: bool = False, wait: bool = True
    ) -> int:
        """`argv` as a step inside the running job (`aifactory exec`); its exit code."""
        from aifactory_cli.service import interactive

        return interactive.execute(self, ref, argv, node=node, all_nodes=all_nodes, wait=wait)

    def shell(self, ref: str, node: str | None = None, wait: bool = True) -> int:
        """An interactive shell inside the running job (`aifactory shell`); its exit status."""
        from aifactory_cli.service import interactive

        return interactive.shell(self, ref, node=node, wait=wait)


def exit_code_for(jobs: list[Job]) -> int:
    """0 if every job COMPLETED, else 1 (the contract's exit codes for --wait and wait)."""
    return 0 if jobs and all(j.state == states.COMPLETED for j in jobs) else 1


__all__ = ["AifactoryError", "Service", "exit_code_for"]
