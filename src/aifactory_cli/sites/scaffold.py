"""`sites add`: scaffold a site profile from flags, or from what a live cluster reports
(`scontrol show partition` / `scontrol show node`, read over one SSH command)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aifactory_cli.scheduler.slurm_site import gres_gpus as _gpus
from aifactory_cli.scheduler.slurm_site import parse_nodes, parse_partitions
from aifactory_cli.units import format_duration, format_memory, parse_duration

T = TypeVar("T")


def partitions_from_live(partitions_text: str, nodes_text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(partitions block, site-level facts) from the two scontrol outputs."""
    parts = parse_partitions(partitions_text)
    nodes = parse_nodes(nodes_text)
    out: dict[str, Any] = {}
    gpu_models: set[str] = set()
    for name, p in parts.items():
        members = [n for n in nodes.values() if name in n.get("Partitions", "").split(",")]
        gpus = [_gpus(n.get("Gres", "")) for n in members]
        per_node = min((g for g, _ in gpus), default=0)
        gpu_models.update(m for _, m in gpus if m)
        cores = min((int(n["CPUTot"]) for n in members if n.get("CPUTot", "").isdigit()), default=None)
        mem = min((int(n["RealMemory"]) for n in members if n.get("RealMemory", "").isdigit()), default=None)
        entry: dict[str, Any] = {"kind": "gpu" if per_node else "cpu"}
        entry["whole_node"] = p.get("OverSubscribe", "NO").startswith("EXCLUSIVE")
        if p.get("MinNodes", "0").isdigit() and int(p["MinNodes"]) > 1:
            entry["min_nodes"] = int(p["MinNodes"])
        if p.get("MaxNodes", "UNLIMITED").isdigit():
            entry["max_nodes"] = int(p["MaxNodes"])
        for key, field in (("max_time", "MaxTime"), ("default_time", "DefaultTime")):
            value = p.get(field, "")
            if value not in ("", "UNLIMITED", "NONE"):
                entry[key] = format_duration(parse_duration(value))
        if per_node:
            entry["gpus_per_node"] = per_node
        if cores:
            entry["cores_per_node"] = cores
        if mem:
            entry["memory_per_node"] = format_memory(mem)
        if p.get("State", "UP") != "UP":
            entry["notes"] = [f"State={p.get('State')} when scaffolded"]
        out[name] = entry
    facts = {"gpu_models": sorted(gpu_models)}
    return out, facts


def scaffold(
    name: str,
    *,
    host: str | None,
    port: int | None,
    user: str | None,
    extends: str | None,
    gpu_vendor: str | None,
    gpu_model: str | None,
    gpus_per_node: int | None,
    account_required: bool | None,
    partitions: dict[str, Any] | None,
    source: str,
) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if extends:
        data["extends"] = extends
    data["version"] = 1
    data["description"] = f"{name} (scaffolded by aifactory sites add; review every value)"
    data["verified"] = dt.date.today().isoformat()
    data["sources"] = [{"title": source, "url": f"aifactory://sites-add/{name}"}]
    ssh = {k: v for k, v in (("host", host), ("port", port), ("user", user)) if v is not None}
    if ssh:
        data["ssh"] = ssh
    if gpu_vendor or gpu_model or gpus_per_node:
        gpu: dict[str, Any] = {"vendor": gpu_vendor or "nvidia", "model": gpu_model or "GPU"}
        if gpus_per_node:
            gpu["per_node"] = gpus_per_node
        data["gpu"] = gpu
    if account_required is not None:
        data["account"] = {"required": account_required}
    if partitions:
        data["partitions"] = partitions
    return data


def install_profile(target: Path, text: str, check: Callable[[Path], T]) -> T:
    """Put a profile at `target` only if `check` accepts it: written first as NAME.yaml in a hidden
    temporary directory next to `target` (the same file name, so the profile's name and an `extends`
    of a built-in of that name work as for the final file; in a directory, so `sites list` never sees
    it), checked, then renamed into place in one step. If the check fails, `target` (absent or an
    older profile) is left untouched and the temporary file is removed; the error's location names
    `target`, not the temporary file."""
    from aifactory_cli.errors import AifactoryError

    tmpdir = Path(tempfile.mkdtemp(prefix=f".{target.stem}-", suffix=".tmp", dir=target.parent))
    try:
        tmp = tmpdir / target.name
        tmp.write_text(text)
        try:
            result = check(tmp)
        except AifactoryError as exc:
            if exc.where:
                exc.where = exc.where.replace(str(tmp), str(target))
            raise
        os.replace(tmp, target)
        return result
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
