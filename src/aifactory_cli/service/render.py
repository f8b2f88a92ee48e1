"""What a spec becomes before anything is sent: the script, its warnings and its estimated charge
(`render` and `submit --dry-run`). Nothing here connects to a site or records a job.

`Overrides` (what the command line says on top of the spec and config) is re-exported here: it is
the door through which the CLI hands --account/--partition/--qos to the service layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aifactory_cli.sites.resolve import Overrides

if TYPE_CHECKING:
    from aifactory_cli.service.session import Service
    from aifactory_cli.service.submit import Prepared


@dataclass
class Preview:
    """One rendered script, with what the user should hear about it."""

    spec: str
    site: str
    script: str
    warnings: list[str] = field(default_factory=list)
    charge: str | None = None  # "at most ..." text, None if the profile has no billing rule
    resolved: dict[str, Any] = field(default_factory=dict)
    charge_json: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "site": self.site,
            "resolved": self.resolved,
            "charge": self.charge_json,
            "script": self.script,
        }


def preview_of(prepared: Prepared) -> Preview:
    from aifactory_cli.sites.billing import charge_json, estimate

    r = prepared.resolved
    charge = estimate(r)
    return Preview(
        spec=str(prepared.loaded_spec.path),
        site=r.site,
        script=prepared.script,
        warnings=list(r.warnings),
        charge=str(charge) if charge else None,
        resolved=r.summary(),
        charge_json=charge_json(charge),
    )


def render(svc: Service, spec: Path, site: str | None, overrides: Overrides) -> Preview:
    """`render`: the script submit would send; a missing account shows as a placeholder."""
    overrides.preview = True
    return preview_of(svc.prepare(spec, site, overrides))


def dry_run(
    svc: Service, specs: list[Path], site: str | None, overrides: Overrides, after: list[str] | None = None
) -> list[Preview]:
    """`submit --dry-run`: every spec resolved and rendered (all of them, or an error: nothing is sent)."""
    prepared = [svc.prepare(s, site, overrides, after=after if i == 0 else None) for i, s in enumerate(specs)]
    return [preview_of(p) for p in prepared]


__all__ = ["Overrides", "Preview", "dry_run", "preview_of", "render"]
