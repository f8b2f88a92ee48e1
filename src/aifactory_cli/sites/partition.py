"""Choosing a site's partition for a job, and the limits that refuse it before anything is sent."""

from __future__ import annotations

from aifactory_cli.errors import LimitError, did_you_mean
from aifactory_cli.sites import segments
from aifactory_cli.sites.profile import Partition, SiteProfile
from aifactory_cli.spec.model import JobSpec
from aifactory_cli.units import format_memory


def wants_gpu(spec: JobSpec) -> bool:
    g = spec.resources.gpus_per_node
    return g == "all" or (isinstance(g, int) and g > 0)


def gpu_count(spec: JobSpec, profile: SiteProfile, part: Partition) -> int:
    g = spec.resources.gpus_per_node
    if g == "all":
        per_node = profile.gpus_per_node(part)
        if per_node is None:
            raise LimitError(
                f"the number of GPUs per node of {profile.name} is not known (its sources do not say), "
                "so gpus_per_node: all cannot be resolved",
                f"set resources.gpus_per_node to a number in the spec (or under sites.{profile.name}), "
                f"or add gpu.per_node to a user profile extending {profile.name}",
            )
        return per_node
    return int(g)


def local_gpus(spec: JobSpec, profile: SiteProfile) -> int:
    """The local site's nodes share this machine's GPUs (`profile.gpu`, from nvidia-smi/rocm-smi)."""
    have = (profile.gpu.per_node if profile.gpu else 0) or 0
    nodes, asked = spec.resources.nodes, spec.resources.gpus_per_node
    per_node = have // nodes if asked == "all" else int(asked)
    if per_node < 1 or per_node * nodes > have:
        raise LimitError(
            f"{nodes} node(s) x {asked} GPUs asked, but this machine has {have} GPU(s) (nvidia-smi, rocm-smi)"
            if have
            else "the local site has no GPUs (nvidia-smi and rocm-smi list none here), but the job asks for some",
            "for a CPU run here set resources.gpus_per_node: 0 (or only for this machine: "
            "sites: {local: {resources: {gpus_per_node: 0}}}), as examples/train-cpu.yaml does; "
            "or run it on a GPU site (--site lumi, --site jupiter)"
            if not have
            else "ask fewer GPUs or nodes here, or run it on a GPU site (--site lumi, --site jupiter)",
        )
    return per_node


def _limit_problems(spec: JobSpec, profile: SiteProfile, pname: str, part: Partition) -> list[str]:
    """Why partition `pname` cannot run `spec` (empty if it can)."""
    problems: list[str] = []
    res = spec.resources
    node_gpus = profile.gpus_per_node(part)
    if wants_gpu(spec):
        if part.kind != "gpu" or node_gpus == 0:
            problems.append(f"'{pname}' is a CPU partition, but the job asks for GPUs")
        else:
            asked = gpu_count(spec, profile, part)
            if node_gpus is not None and asked > node_gpus:
                gpu_model = profile.gpu.model if profile.gpu else "GPU"
                problems.append(
                    f"{asked} GPUs per node asked, but {profile.name} nodes have {node_gpus} ({gpu_model}); "
                    f"use gpus_per_node: {node_gpus} (or 'all') and more nodes"
                )
            most = profile.gpu.max_per_node if profile.gpu else None
            if node_gpus is None and most is not None and asked > most:
                problems.append(
                    f"{asked} GPUs per node asked; how many GPUs {profile.name} nodes have is not known, but no "
                    f"{profile.gpu.model if profile.gpu else 'GPU'} node has more than {most}; "
                    f"use at most gpus_per_node: {most} and more nodes"
                )
    if part.min_nodes is not None and res.nodes < part.min_nodes:
        problems.append(f"{res.nodes} node(s) asked, but '{pname}' takes jobs of at least {part.min_nodes} nodes")
    if part.max_nodes is not None and res.nodes > part.max_nodes:
        problems.append(f"{res.nodes} nodes asked, but '{pname}' allows at most {part.max_nodes} per job")
    time_problem = segments.time_problem(spec, pname, part.max_time_seconds)
    if time_problem:
        problems.append(time_problem)
    cores = profile.cores_per_node_of(part)
    if cores and res.tasks_per_node and res.cpus_per_task and res.tasks_per_node * res.cpus_per_task > cores:
        problems.append(
            f"{res.tasks_per_node} tasks x {res.cpus_per_task} CPUs = {res.tasks_per_node * res.cpus_per_task} "
            f"cores per node, but nodes of '{pname}' have {cores} usable cores"
        )
    mem = profile.memory_per_node_of(part)
    if mem and res.memory_mib and res.memory_mib > mem:
        problems.append(
            f"memory {format_memory(res.memory_mib)} per node is over what nodes of '{pname}' have "
            f"({format_memory(mem)})"
        )
    return problems


def _fills_node(spec: JobSpec, profile: SiteProfile, part: Partition) -> bool:
    res = spec.resources
    if res.exclusive:
        return True
    if wants_gpu(spec):
        per_node = profile.gpus_per_node(part)
        return bool(per_node) and gpu_count(spec, profile, part) >= (per_node or 0)
    cores = profile.cores_per_node_of(part)
    tasks = res.tasks_per_node or 1
    cpus = res.cpus_per_task or 1
    return bool(cores and tasks * cpus >= cores)


def choose_partition(spec: JobSpec, profile: SiteProfile, requested: str | None) -> tuple[str | None, Partition | None]:
    """The partition to use: the requested one (checked) or the best automatic fit."""
    if profile.scheduler == "local" and not profile.partitions:
        return None, None
    if requested:
        part = profile.partitions.get(requested)
        if part is None:
            guess = did_you_mean(requested, list(profile.partitions))
            raise LimitError(
                f"site '{profile.name}' has no partition '{requested}'",
                (f"did you mean '{guess}'? " if guess else "") + f"partitions: {', '.join(profile.partitions)}",
            )
        problems = _limit_problems(spec, profile, requested, part)
        if problems:
            raise LimitError(
                f"{profile.name}: " + "; ".join(problems),
                f"change the spec's resources or pick another partition ({', '.join(profile.partitions)})",
            )
        return requested, part

    kind = "gpu" if wants_gpu(spec) else "cpu"
    candidates = [(n, p) for n, p in profile.partitions.items() if p.auto and p.kind == kind]
    if not candidates and kind == "cpu":
        candidates = [(n, p) for n, p in profile.partitions.items() if p.auto]
    if not candidates:
        have = ", ".join(f"{n} ({p.kind})" for n, p in profile.partitions.items()) or "none"
        raise LimitError(
            f"site '{profile.name}' has no {kind.upper()} partition for automatic selection",
            f"partitions: {have}; set resources.partition"
            if kind == "cpu"
            else f"this site has no GPUs (partitions: {have}); choose a GPU site",
        )
    # whole-node partitions first when the job fills its nodes, shared ones first otherwise
    candidates.sort(key=lambda np: np[1].whole_node != _fills_node(spec, profile, np[1]))
    rejected: list[str] = []
    for pname, part in candidates:
        problems = _limit_problems(spec, profile, pname, part)
        if not problems:
            return pname, part
        rejected.extend(problems)
    hint = "reduce nodes, GPUs or time in the spec's resources"
    if spec.checkpoint is not None:
        hint += ", or checkpoint.segment (one segment must fit a partition's time limit)"
    raise LimitError(f"no partition of '{profile.name}' can run this job: " + "; ".join(dict.fromkeys(rejected)), hint)
