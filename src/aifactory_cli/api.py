"""The library API: aifactory from Python (notebooks, pipelines, scripts), re-exported from the package.

    import aifactory_cli as aif
    job = aif.submit("train.yaml", site="lumi", account="project_465000123")
    job.wait(timeout=3600)
    print(job.logs())
    job.fetch("results/")

Every call opens the service layer (the same one the CLI uses: same store, config, profiles and
errors) and closes it again: a `Job` holds no connection between calls. Nothing here prints, exits
or installs signal handlers: notices go to the `aifactory_cli` logger (warnings at WARNING, the rest
at INFO), errors are raised as the `AifactoryError` hierarchy (`.message`, `.hint`).
"""

from __future__ import annotations

import codecs
import contextlib
import copy
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from aifactory_cli.errors import BadInput
from aifactory_cli.service.broker import PlanRow  # light: dataclasses and settings

if TYPE_CHECKING:
    from aifactory_cli.jobs.model import Job as Record
    from aifactory_cli.service.session import Service
    from aifactory_cli.sites.resolve import Overrides
    from aifactory_cli.spec.model import LoadedSpec

log = logging.getLogger("aifactory_cli")

# a spec file's path, or the spec itself as a mapping (what the YAML file would hold)
SpecLike: TypeAlias = str | os.PathLike[str] | Mapping[str, Any]
Scalar: TypeAlias = str | int | float | bool
# `matrix=`: {"LR": [0.1, 0.01]} (every combination), or explicit elements [{"LR": 0.1}, ...]
MatrixLike: TypeAlias = Mapping[str, Sequence[Scalar]] | Sequence[Mapping[str, Scalar]]

# For tests: a function (notify) -> Service used instead of the real one (e.g. on a fake site).
_service_factory: Callable[[Callable[[str], None]], Service] | None = None


def _notice(message: str) -> None:
    if message.startswith("warning: "):
        log.warning(message[len("warning: ") :])
    else:
        log.info(message)


@contextlib.contextmanager
def _service() -> Iterator[Service]:
    if _service_factory is not None:
        svc = _service_factory(_notice)
    else:
        from aifactory_cli.service.session import Service

        svc = Service(notify=_notice)
    try:
        yield svc
    finally:
        svc.close()


@dataclass(frozen=True)
class Task:
    """One element of a sweep (`matrix:`): its index, its matrix values and its state."""

    index: int
    state: str
    values: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None
    slurm_job_id: str | None = None
    reason: str | None = None


class Job:
    """A tracked job. `id`, `name` and `site` never change; `state`, `slurm_job_id`, `exit_code`
    and `tasks` are looked up on access: from the local store, and from the site at most once per
    `poll_interval` of its profile (never again once the job has ended)."""

    def __init__(self, record: Record) -> None:
        self._record = record

    # --- fixed facts -----------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._record.id

    @property
    def name(self) -> str:
        return self._record.name

    @property
    def site(self) -> str:
        return self._record.site

    @property
    def ref(self) -> str:
        """`SITE:SLURM_ID` once the site has queued it, else the id (what the CLI takes as JOB)."""
        return self._record.ref

    @property
    def array_size(self) -> int:
        """The number of sweep elements (0: not a sweep)."""
        return self._record.array_size

    # --- looked up on access -----------------------------------------------------------------------

    def _fresh(self, force: bool = False) -> Record:
        if self._record.is_final and not force:
            return self._record  # an ended job does not change
        with _service() as svc:
            record = svc.store.find(self._record.id)
            svc.refresh([record], force=force)  # asks the site only once poll_interval has passed
        self._record = record
        return record

    def refresh(self) -> Job:
        """Ask the site now, whatever its poll_interval."""
        self._fresh(force=True)
        return self

    @property
    def state(self) -> str:
        """PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, ... (`aifactory status`)."""
        return self._fresh().state

    @property
    def slurm_job_id(self) -> str | None:
        return self._fresh().slurm_job_id

    @property
    def exit_code(self) -> int | None:
        """The job's exit code once it has ended, else None."""
        record = self._fresh()
        return record.exit_code if record.is_final else None

    @property
    def reason(self) -> str | None:
        """Why it is pending, or how it ended, as the site says."""
        return self._fresh().reason

    @property
    def workdir(self) -> str | None:
        """The job dir on the site."""
        return self._fresh().workdir

    @property
    def done(self) -> bool:
        """Whether the job has ended (any final state)."""
        return self._fresh().is_final

    @property
    def tasks(self) -> list[Task]:
        """A sweep's elements in index order ([] for a plain job); an element the site has not
        reported on separately yet has the job's state."""
        record = self._fresh()
        if not record.array_size:
            return []
        from aifactory_cli.service.elements import values_of

        values = values_of(record)
        reported = {t.task_id: t for t in record.tasks}
        out = []
        for i in range(record.array_size):
            t = reported.get(i)
            out.append(
                Task(
                    index=i,
                    state=t.state if t else record.state,
                    values=values[i] if i < len(values) else {},
                    exit_code=t.exit_code if t else None,
                    slurm_job_id=t.slurm_job_id if t else None,
                    reason=t.reason if t else None,
                )
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """What `aifactory status --json` shows for this job."""
        return self._fresh().to_json()

    # --- actions -----------------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> str:
        """Block until the job ends; returns its final state. Raises `WaitTimeout` after `timeout`
        seconds (the job runs on)."""
        with _service() as svc:
            (record,) = svc.wait(jobs=[svc.store.find(self._record.id)], timeout=timeout)
        self._record = record
        return record.state

    def logs(self, stderr: bool = False, task: int | str | None = None) -> str:
        """The job's stdout (or stderr) so far; of sweep element `task` (an index or `KEY=VALUE`)."""
        with _service() as svc:
            record, data = svc.logs(self._record.id, stderr, task)
        self._record = record
        return data.decode(errors="replace")

    def follow(self, stderr: bool = False, task: int | str | None = None, interval: float = 1.0) -> Iterator[str]:
        """The job's output line by line (each with its newline) as it is written, until the job ends."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        with _service() as svc:
            for chunk in svc.follow(self._record.id, stderr, task, interval):
                pending += decoder.decode(chunk)
                *lines, pending = pending.split("\n")
                for line in lines:
                    yield line + "\n"
        pending += decoder.decode(b"", final=True)
        if pending:
            yield pending

    def fetch(
        self,
        dest: str | os.PathLike[str] | None = None,
        patterns: Sequence[str] | None = None,
        tasks: Sequence[str | int] | None = None,
    ) -> list[Path]:
        """Download the spec's `download:` globs (or `patterns`) into `dest` (default:
        ./NAME-ID); returns the local paths. `tasks`: only these sweep elements."""
        with _service() as svc:
            done = svc.fetch(
                self._record.id,
                Path(dest) if dest is not None else None,
                list(patterns) if patterns else None,
                [str(t) for t in tasks] if tasks else None,
            )
        self._record = done.job
        return [done.target / f for f in done.files]

    def cancel(self) -> str:
        """Cancel the job (a no-op once it has ended); returns the state the site reports."""
        with _service() as svc:
            (record,) = svc.cancel([self._record.id])
        self._record = record
        return record.state

    def __repr__(self) -> str:  # the last known state: showing a job asks no site
        r = self._record
        slurm = f", slurm_job_id={r.slurm_job_id!r}" if r.slurm_job_id else ""
        return f"Job(id={r.id!r}, name={r.name!r}, site={r.site!r}, state={r.state!r}{slurm})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


# --- specs ------------------------------------------------------------------------------------------


def _load(spec: SpecLike, base_dir: str | os.PathLike[str] | None, matrix: MatrixLike | None) -> LoadedSpec:
    """The spec, from its file or from a mapping (written nowhere), with `matrix` on top."""
    from aifactory_cli.errors import SpecError
    from aifactory_cli.spec.model import spec_from_doc
    from aifactory_cli.spec.yamlio import YamlDoc, load_yaml_file

    if isinstance(spec, Mapping):
        doc = YamlDoc(copy.deepcopy(dict(spec)), {}, "<spec dict>")
        path = None
    elif isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        doc = load_yaml_file(path, SpecError, what="job spec")
    else:
        raise BadInput(
            f"a spec is a path to a YAML file or a dict, not {type(spec).__name__}",
            'aif.submit("train.yaml") or aif.submit({"run": "echo hi"})',
        )
    if matrix is not None and isinstance(doc.data, dict):
        doc.data = {**doc.data, "matrix": _plain(matrix)}
    loaded = spec_from_doc(doc, path)
    if path is None:
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        return _with_base(loaded, base.resolve())
    if base_dir is not None:
        raise BadInput("base_dir= is for a dict spec", "a spec file's uploads are relative to the file")
    return loaded


def _plain(matrix: MatrixLike) -> Any:
    if isinstance(matrix, Mapping):
        return {k: list(v) if isinstance(v, (list, tuple, range)) else v for k, v in matrix.items()}
    if isinstance(matrix, (str, bytes)):
        return matrix  # refused by the spec's validation, with its message
    return [dict(e) if isinstance(e, Mapping) else e for e in matrix]


def _with_base(loaded: LoadedSpec, base: Path) -> LoadedSpec:
    """A spec given as a mapping: no file; its uploads are relative to `base`."""
    from aifactory_cli.spec.model import LoadedSpec

    class DictSpec(LoadedSpec):
        @property
        def base_dir(self) -> Path:
            return base

    return DictSpec(loaded.spec, loaded.raw, None, loaded.doc)


def _overrides(account: str | None, partition: str | None, qos: str | None, preview: bool = False) -> Overrides:
    from aifactory_cli.service.render import Overrides

    return Overrides(account=account, partition=partition, qos=qos, preview=preview)


def _spec_name(loaded: LoadedSpec) -> str:
    return str(loaded.path) if loaded.path else "<spec dict>"


# --- the calls ----------------------------------------------------------------------------------------


def submit(
    spec: SpecLike,
    site: str | None = None,
    *,
    account: str | None = None,
    partition: str | None = None,
    qos: str | None = None,
    matrix: MatrixLike | None = None,
    after: Sequence[str | Job] = (),
    base_dir: str | os.PathLike[str] | None = None,
    prefer: str = "start",
    sites: Sequence[str] | None = None,
) -> Job:
    """Submit a job spec (a YAML file, or a dict) to `site` (default: AIFACTORY_SITE, the
    config's default_site, or local). `matrix` replaces the spec's sweep: one array job, its
    elements in `job.tasks`. `after`: start only once these jobs completed successfully.
    `site="auto"`: the broker picks among `sites` (default: the configured sites with an
    account) by `prefer` ("start" or "cost"), as `submit --site auto` does; why goes to the log."""
    loaded = _load(spec, base_dir, matrix)
    with _service() as svc:
        if site == "auto":
            from aifactory_cli.service.broker import choose_site

            site, why = choose_site(
                svc,
                _spec_name(loaded),
                list(sites) if sites else None,
                _overrides(account, partition, qos),
                prefer,
                loaded,
            )
            log.info("site %s: %s", site, why)
        elif sites:
            raise BadInput("sites= is for site='auto'", "pass site='auto' to let the broker choose among them")
        svc.prewarm(site)  # the login overlaps with resolving and rendering
        prepared = svc.prepare(
            _spec_name(loaded),
            site,
            _overrides(account, partition, qos),
            after=[a.id if isinstance(a, Job) else a for a in after],
            loaded_spec=loaded,
        )
        for warning in prepared.resolved.warnings:
            log.warning(warning)
        record = svc.submit(prepared)
    return Job(record)


def jobs(site: str | None = None, state: str | Sequence[str] | None = None) -> list[Job]:
    """The tracked jobs (oldest first), from the local store: no site is asked until a job's
    state is read."""
    from aifactory_cli.service.listing import list_jobs

    wanted = [state] if isinstance(state, str) else list(state or [])
    with _service() as svc:
        return [Job(r) for r in list_jobs(svc, site=site, states=wanted)]


def get(ref: str) -> Job:
    """A tracked job by any JOB reference the CLI takes: its id, `SITE:SLURM_ID`, or its name."""
    with _service() as svc:
        return Job(svc.store.find(ref))


def plan(
    spec: SpecLike,
    sites: Sequence[str] | None = None,
    *,
    account: str | None = None,
    partition: str | None = None,
    qos: str | None = None,
    prefer: str = "start",
    matrix: MatrixLike | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> list[PlanRow]:
    """Where the spec (a YAML file, or a dict) could run (`aifactory plan`): one row per site,
    runnable ones first, ranked by `prefer` ("start" or "cost"), with the partition, the
    estimated charge and start (sbatch --test-only), or why not (`ok=False`, `reason`)."""
    from aifactory_cli.service.broker import check_prefer, rank
    from aifactory_cli.service.broker import plan as broker_plan

    prefer = check_prefer(prefer)  # before anything is asked of a site
    loaded = _load(spec, base_dir, matrix)
    with _service() as svc:
        rows = broker_plan(
            svc, _spec_name(loaded), list(sites) if sites else None, _overrides(account, partition, qos), loaded
        )
    return rank(rows, prefer)


def render(
    spec: SpecLike,
    site: str | None = None,
    *,
    account: str | None = None,
    partition: str | None = None,
    qos: str | None = None,
    matrix: MatrixLike | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> str:
    """The batch script `submit` would send to `site` (nothing is sent; a missing account shows as
    a placeholder)."""
    from aifactory_cli.service.render import preview_of

    loaded = _load(spec, base_dir, matrix)
    with _service() as svc:
        prepared = svc.prepare(_spec_name(loaded), site, _overrides(account, partition, qos, True), loaded_spec=loaded)
    for warning in prepared.resolved.warnings:
        log.warning(warning)
    return preview_of(prepared).script


__all__ = ["Job", "MatrixLike", "PlanRow", "SpecLike", "Task", "get", "jobs", "plan", "render", "submit"]
