"""Charge estimates in each site's own unit, from the partition's billing rule in the profile.

An estimate assumes the job runs for its whole time limit (what the site reserves); a job that
ends sooner is charged less. A checkpointed run counts every segment its total time needs. Rules (sites.md):
- node_hours:      rate x nodes x hours (LUMI standard-g: 4 GPU-hours per node-hour; LUMI
                   standard: 128 core-hours per node-hour; JUPITER: whole nodes, 288 core-hours)
- lumi_shared_gpu: 0.5 x max(GCDs, ceil(cores/8), ceil(memory/64 GB)) per hour (LUMI small-g, dev-g)
- lumi_shared_cpu: max(cores, ceil(memory/2 GB)) core-hours per hour (LUMI small, debug)
- gpu_hours:       rate x GPUs x hours;  core_hours: rate x cores x hours
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aifactory_cli.sites.resolve import ResolvedJob


@dataclass
class Charge:
    amount: float
    unit: str
    how: str

    def __str__(self) -> str:
        return f"{self.amount:.2f} {self.unit} ({self.how})"


def charge_json(charge: Charge | None) -> dict[str, object] | None:
    return {"amount": charge.amount, "unit": charge.unit, "how": charge.how} if charge else None


def estimate(job: ResolvedJob) -> Charge | None:
    """The charge of `job` for its full time limit, or None where the profile has no billing rule."""
    part = job.partition
    if part is None or part.billing is None:
        return None
    b = part.billing
    hours = job.time_seconds / 3600
    copies = 1 if job.pack else (job.array_size or 1)  # a packed sweep is one job on its nodes
    cores = job.tasks_per_node * job.cpus_per_task  # per node
    if job.memory_mib:
        mem_gib = job.memory_mib / 1024
    elif job.memory_per_gpu_mib:
        mem_gib = job.memory_per_gpu_mib * job.gpus_per_node / 1024
    else:
        mem_gib = 0.0
    # a checkpointed run: every segment reserves a full segment (`time_seconds` is one segment's)
    segments = job.segments.count if job.segments else 1
    times = _duration(job.time_seconds) + (f" x {copies} array elements" if copies > 1 else "")
    times += f" x {segments} segments" if job.segments else ""
    nodes = _count(job.nodes, "node")
    mem_term = [f"ceil({mem_gib:g} GB/64)"] if mem_gib else []  # no memory asked: the term is 0
    if b.formula == "node_hours":
        amount = b.rate * job.nodes * hours
        how = f"{b.rate:g} per node-hour x {nodes} x {times}"
    elif b.formula == "lumi_shared_gpu":
        slots = max(job.gpus_per_node, math.ceil(cores / 8), math.ceil(mem_gib / 64))
        amount = b.rate * slots * job.nodes * hours
        terms = [_count(job.gpus_per_node, "GCD"), f"ceil({_count(cores, 'core')}/8)", *mem_term]
        how = f"{b.rate:g} x max({', '.join(terms)}) x {nodes} x {times}"
    elif b.formula == "lumi_shared_cpu":
        slots = max(cores, math.ceil(mem_gib / 2))
        amount = b.rate * slots * job.nodes * hours
        per_node = f"max({_count(cores, 'core')}, ceil({mem_gib:g} GB/2))" if mem_gib else _count(cores, "core")
        how = f"{per_node} x {nodes} x {times}"
    elif b.formula == "gpu_hours":
        amount = b.rate * job.gpus_per_node * job.nodes * hours
        how = f"{b.rate:g} x {_count(job.gpus_per_node * job.nodes, 'GPU')} x {times}"
    else:  # core_hours
        amount = b.rate * cores * job.nodes * hours
        how = f"{b.rate:g} x {_count(cores * job.nodes, 'core')} x {times}"
    return Charge(round(amount * copies * segments, 4), b.unit, how)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _duration(seconds: float) -> str:
    """The time limit as people say it: 30 min, 2 h, 1.5 h (not 0.0833333 h)."""
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:.4g} h"
