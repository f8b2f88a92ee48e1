"""Packing a sweep onto whole nodes: one Slurm job whose elements run as job steps side by side,
each on its share of a node's GPUs, instead of a job array whose every element takes (and is billed
for) a whole node.

JSC documents this for JUPITER/JUWELS Booster, where nodes are allocated whole and production work is
expected to use every GPU of a node: start each single-GPU program as its own step,
`srun --exclusive -n 1 --gres=gpu:1 prog &`, then `wait` (JUPITER user docs, batchsystem.html,
"Job steps" / packing; ../shared/sites.md). The spec asks for it with `pack: true`; each element
keeps its own directory, logs (stdout.N.log, stderr.N.log) and exit code (exit_code.N)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from aifactory_cli.errors import LimitError, SpecError
from aifactory_cli.spec.model import JobSpec


@dataclass(frozen=True)
class Pack:
    elements: int  # the sweep's elements, each one job step
    element_gpus: int  # GPUs of one element (its gpus_per_node)
    element_tasks: int  # tasks of one element's step
    element_cpus: int  # CPUs per task of one element
    per_node: int  # elements side by side on one node
    nodes: int  # nodes of the job: enough for the elements that run at once

    @property
    def running_at_once(self) -> int:
        return min(self.elements, self.per_node * self.nodes)


def plan(spec: JobSpec, scheduler: str, gpus: int, tasks: int, cpus: int, node_gpus: int) -> Pack | None:
    """The packing of `spec` (None when it does not ask for it). The element's resources are the
    spec's: `gpus` per element, `tasks` tasks of `cpus` CPUs; `node_gpus` is what one node has."""
    if not spec.pack:
        return None
    if not spec.array_size:
        raise SpecError("pack: true packs the elements of a sweep, and the spec has no matrix", "add a matrix")
    if scheduler != "slurm":
        return None  # the local site runs a sweep's elements side by side already
    if spec.launcher == "none":
        raise SpecError(
            "pack: true starts each element as its own srun step; launcher: none has no steps",
            "use launcher: srun (or torchrun)",
        )
    if spec.resources.nodes != 1:
        raise LimitError(
            f"pack: true puts several elements on one node, but each asks for {spec.resources.nodes} nodes",
            "pack elements of one node each (resources.nodes: 1), or leave pack out",
        )
    if not gpus or not node_gpus:
        raise LimitError(
            "pack: true shares a node's GPUs between elements, but the elements ask for no GPUs "
            "(or the partition's GPUs per node are unknown)",
            "set resources.gpus_per_node (e.g. 1), or leave pack out",
        )
    per_node = node_gpus // gpus
    if per_node < 2:
        raise LimitError(
            f"pack: true: an element asks for {gpus} of a node's {node_gpus} GPUs, so only one fits on a node",
            "ask fewer GPUs per element, or leave pack out (a job array does the same then)",
        )
    at_once = min(spec.array_size, spec.max_parallel or spec.array_size)
    return Pack(
        elements=spec.array_size,
        element_gpus=gpus,
        element_tasks=tasks,
        element_cpus=cpus,
        per_node=per_node,
        nodes=math.ceil(at_once / per_node),
    )
