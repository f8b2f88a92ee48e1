"""The broker: where can this spec run, what would it cost, when would it start (`plan`), and
which site to pick (`submit --site auto`); the allocation left (`usage`)."""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aifactory_cli import settings
from aifactory_cli.errors import AifactoryError, BadInput, LimitError, RemoteError

if TYPE_CHECKING:
    from aifactory_cli.service.session import Service
    from aifactory_cli.sites.resolve import Overrides
    from aifactory_cli.spec.model import LoadedSpec

PREFERENCES = ("start", "cost")  # what `plan --prefer` and `submit --site auto --prefer` rank by


@dataclass
class PlanRow:
    site: str
    ok: bool
    partition: str | None = None
    reason: str | None = None
    charge: float | None = None
    unit: str | None = None
    charge_how: str | None = None
    start: str | None = None
    nodes: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def candidate_sites(svc: Service, sites: list[str] | None) -> list[str]:
    if sites:
        return sites
    configured = [name for name, s in svc.config.sites.items() if s.account] or []
    env_site = settings.current().site
    if env_site and env_site not in configured:
        configured.append(env_site)
    if not configured:
        raise BadInput("no sites to compare", "pass --sites lumi,jupiter, or add sites with an account to the config")
    return configured


def plan(
    svc: Service, spec_path: str, sites: list[str] | None, overrides: Overrides, loaded: LoadedSpec | None = None
) -> list[PlanRow]:
    """One row per candidate site. `loaded`: the spec already read (a dict spec from the library API),
    `spec_path` then only names it in messages."""
    from aifactory_cli.sites.billing import estimate
    from aifactory_cli.spec.model import load_spec

    loaded = loaded or load_spec(spec_path)
    rows = []
    for site in candidate_sites(svc, sites):
        row = PlanRow(site=site, ok=False)
        rows.append(row)
        try:
            prof = svc.profile(site).profile
            req = loaded.for_site(site).requires
            if req.gpu_vendor and (prof.gpu is None or prof.gpu.vendor != req.gpu_vendor):
                have = prof.gpu.vendor if prof.gpu else "no GPUs"
                row.reason = f"the spec requires {req.gpu_vendor} GPUs; {site} has {have}"
                continue
            if req.cpu_arch and prof.cpu_arch != req.cpu_arch:
                row.reason = f"the spec requires {req.cpu_arch}; {site} is {prof.cpu_arch or 'unknown'}"
                continue
            prepared = svc.prepare(spec_path, site, overrides, loaded_spec=loaded)
        except AifactoryError as exc:
            row.reason = exc.message
            continue
        r = prepared.resolved
        row.partition, row.warnings = r.partition_name, r.warnings
        charge = estimate(r)
        if charge:
            row.charge, row.unit, row.charge_how = charge.amount, charge.unit, charge.how
        if prof.scheduler == "local":
            row.ok, row.start = True, dt.datetime.now().replace(microsecond=0).isoformat()
            continue
        try:
            from aifactory_cli.scheduler.slurm import sbatch_error
            from aifactory_cli.scheduler.slurm_site import parse_test_only, test_only_command

            result = svc.backend(site).transport.run(test_only_command(), stdin=prepared.script.encode())
        except RemoteError as exc:
            row.reason = f"cannot reach {site}: {exc.message}"
            continue
        parsed = parse_test_only(result.stderr)
        if parsed is None:
            row.reason = sbatch_error(result.stderr) or result.stderr.strip() or "sbatch --test-only gave no estimate"
            continue
        row.ok, row.start, row.nodes = True, parsed["start"], parsed["nodes"]
    return rows


def check_prefer(value: str) -> str:
    """`--prefer`: one of PREFERENCES, else bad input (exit 2), before anything is planned or submitted."""
    if value not in PREFERENCES:
        raise BadInput(f"--prefer {value!r}", "use --prefer start or --prefer cost")
    return value


def compare(
    svc: Service, spec_path: str, sites: list[str] | None, prefer: str, account: str | None = None
) -> list[PlanRow]:
    """`plan`: every candidate site, runnable ones first, ranked by `prefer`."""
    from aifactory_cli.sites.resolve import Overrides

    prefer = check_prefer(prefer)  # before anything is asked of a site
    return rank(plan(svc, spec_path, sites, Overrides(account=account)), prefer)


def choose_site(
    svc: Service,
    spec_path: str,
    sites: list[str] | None,
    overrides: Overrides,
    prefer: str,
    loaded: LoadedSpec | None = None,
) -> tuple[str, str]:
    """`submit --site auto`: the best site for the spec and a line that says why; LimitError if none can run it."""
    prefer = check_prefer(prefer)  # before anything is asked of a site
    rows = rank(plan(svc, spec_path, sites, overrides, loaded), prefer)
    if not rows or not rows[0].ok:
        reasons = "; ".join(f"{r.site}: {r.reason}" for r in rows)
        raise LimitError(f"no site can run this job: {reasons}", "see `aifactory plan SPEC`")
    return rows[0].site, why(rows[0], rows, prefer)


def rank(rows: list[PlanRow], prefer: str = "start") -> list[PlanRow]:
    """Runnable sites first; then the soonest start (or the lowest charge, among equal units)."""

    def start_key(r: PlanRow) -> float:
        try:
            return dt.datetime.fromisoformat(r.start).timestamp() if r.start else math.inf
        except ValueError:
            return math.inf

    def cost_key(r: PlanRow) -> float:
        return r.charge if r.charge is not None else math.inf

    units = {r.unit for r in rows if r.ok}
    if prefer == "cost" and len(units) == 1:
        return sorted(rows, key=lambda r: (not r.ok, cost_key(r), start_key(r)))
    return sorted(rows, key=lambda r: (not r.ok, start_key(r), cost_key(r)))


def why(best: PlanRow, rows: list[PlanRow], prefer: str) -> str:
    others = [r for r in rows if r is not best]
    parts = [f"{best.site} ({best.partition}) starts {best.start or '?'}"]
    if best.charge is not None:
        parts.append(f"costs about {best.charge:g} {best.unit}")
    rest = "; ".join(
        f"{r.site}: "
        + (
            f"starts {r.start}" + (f", {r.charge:g} {r.unit}" if r.charge is not None else "")
            if r.ok
            else f"cannot run ({r.reason})"
        )
        for r in others
    )
    return f"chose {', '.join(parts)} [prefer {prefer}]" + (f"; vs {rest}" if rest else "")


# --- usage -----------------------------------------------------------------------------------------


def usage(svc: Service, site: str) -> dict[str, Any]:
    """The allocation left where the site has a tool for it, else the charge so far this month
    computed from sacct with the profile's billing rules."""
    import shlex

    prof = svc.profile(site).profile
    transport = svc.backend(site).transport
    if prof.usage_command:
        result = transport.run(shlex.join(prof.usage_command))
        if result.ok:
            return {"site": site, "source": shlex.join(prof.usage_command), "text": result.stdout}
    from aifactory_cli.scheduler.slurm_site import parse_usage, usage_command

    month = dt.date.today().replace(day=1)
    result = transport.run(usage_command(month))
    if not result.ok:
        raise RemoteError(f"sacct failed on {site}: {result.stderr.strip()}")
    totals: dict[str, float] = {}
    jobs = 0
    for row in parse_usage(result.stdout):
        part = prof.partitions.get(row.partition) or next(
            (p for p in prof.partitions.values() if p.slurm_name == row.partition), None
        )
        if part is None or part.billing is None:
            continue
        jobs += 1
        hours = row.seconds / 3600
        t = row.tres
        nodes = row.nodes
        cpus = int(t.get("cpu", "0") or 0)
        gpus = int(t.get("gres/gpu", "0") or 0)
        mem_gib = _mem_gib(t.get("mem", "0"))
        b = part.billing
        if b.formula == "node_hours":
            amount = b.rate * nodes * hours
        elif b.formula == "lumi_shared_gpu":
            amount = b.rate * max(gpus, math.ceil(cpus / 8), math.ceil(mem_gib / 64)) * hours
        elif b.formula == "lumi_shared_cpu":
            amount = b.rate * max(cpus, math.ceil(mem_gib / 2)) * hours
        elif b.formula == "gpu_hours":
            amount = b.rate * gpus * hours
        else:
            amount = b.rate * cpus * hours
        totals[b.unit] = totals.get(b.unit, 0.0) + amount
    return {
        "site": site,
        "source": f"sacct since {month.isoformat()} with the profile's billing rules",
        "jobs": jobs,
        "charged": {unit: round(v, 3) for unit, v in totals.items()},
    }


def _mem_gib(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)([KMGT]?)", text or "0")
    if not m:
        return 0.0
    return float(m.group(1)) * {"": 1 / 1024, "K": 1 / 1024**2, "M": 1 / 1024, "G": 1, "T": 1024}[m.group(2)]
