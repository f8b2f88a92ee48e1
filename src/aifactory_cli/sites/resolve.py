"""resolve(spec, profile, config, overrides, settings): choose the partition, fill the site's defaults, and
refuse what the site cannot run, before anything is written or sent. Pure: the environment comes in
as a `Settings` argument (callers pass `settings.current()`), so nothing here reads it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from aifactory_cli.errors import ConfigError, LimitError, did_you_mean
from aifactory_cli.settings import Settings
from aifactory_cli.sites.profile import LoadedProfile, Partition, SiteProfile, UserConfig
from aifactory_cli.spec.model import JobSpec
from aifactory_cli.units import format_duration, format_memory, parse_duration, parse_memory


@dataclass
class Overrides:
    """What the command line says on top of the spec and config."""

    account: str | None = None
    partition: str | None = None
    qos: str | None = None
    user: str | None = None
    # `render` previews a script even when no account is configured (submit refuses it)
    preview: bool = False


ACCOUNT_PLACEHOLDER = "ACCOUNT_NOT_SET"
SLURM_DEFAULT_MAX_ARRAY = 1001  # slurm.conf MaxArraySize default; the sites' own values are not in sites.md


@dataclass
class ResolvedJob:
    site: str
    profile: SiteProfile
    spec: JobSpec
    name: str
    partition_name: str | None
    partition: Partition | None
    account: str | None
    qos: str | None
    user: str | None
    nodes: int
    gpus_per_node: int
    tasks_per_node: int
    cpus_per_task: int
    memory_mib: int | None
    memory_per_gpu_mib: int | None
    time_seconds: int
    whole_node: bool
    full_node_gpus: bool
    cpu_bind: str | None
    modules: list[str]
    env: dict[str, str]
    array_size: int
    max_parallel: int | None
    container_runtime: str | None
    slurm_options: dict[str, str | int | bool | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)

    @property
    def time(self) -> str:
        return format_duration(self.time_seconds)

    @property
    def memory(self) -> str | None:
        return format_memory(self.memory_mib) if self.memory_mib else None

    @property
    def memory_per_gpu(self) -> str | None:
        return format_memory(self.memory_per_gpu_mib) if self.memory_per_gpu_mib else None

    @property
    def total_tasks(self) -> int:
        return self.nodes * self.tasks_per_node

    @property
    def gpus_per_task(self) -> int:
        return self.gpus_per_node // self.tasks_per_node if self.tasks_per_node else 0

    def summary(self) -> dict[str, object]:
        return {
            "site": self.site,
            "partition": self.partition_name,
            "account": self.account,
            "nodes": self.nodes,
            "gpus_per_node": self.gpus_per_node,
            "tasks_per_node": self.tasks_per_node,
            "cpus_per_task": self.cpus_per_task,
            "memory": self.memory,
            "time": self.time,
            "array_size": self.array_size,
        }


def local_task_limit() -> int:
    """How many task processes a local job may start at once: generous for trying a multi-node
    layout out, but never an unbounded fork."""
    return max(64, 8 * (os.cpu_count() or 1))


def _check_token(value: str, what: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
        raise ConfigError(
            f"{what} {value!r} is not a valid Slurm {what} name",
            "use letters, digits, '_', '.', '-' (as your site's project/budget names are)",
        )


def _wants_gpu(spec: JobSpec) -> bool:
    g = spec.resources.gpus_per_node
    return g == "all" or (isinstance(g, int) and g > 0)


def _gpu_count(spec: JobSpec, profile: SiteProfile, part: Partition) -> int:
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


def _limit_problems(spec: JobSpec, profile: SiteProfile, pname: str, part: Partition) -> list[str]:
    """Why partition `pname` cannot run `spec` (empty if it can)."""
    problems: list[str] = []
    res = spec.resources
    node_gpus = profile.gpus_per_node(part)
    if _wants_gpu(spec):
        if part.kind != "gpu" or node_gpus == 0:
            problems.append(f"'{pname}' is a CPU partition, but the job asks for GPUs")
        else:
            asked = _gpu_count(spec, profile, part)
            if node_gpus is not None and asked > node_gpus:
                gpu_model = profile.gpu.model if profile.gpu else "GPU"
                problems.append(
                    f"{asked} GPUs per node asked, but {profile.name} nodes have {node_gpus} ({gpu_model}); "
                    f"use gpus_per_node: {node_gpus} (or 'all') and more nodes"
                )
    if part.min_nodes is not None and res.nodes < part.min_nodes:
        problems.append(f"{res.nodes} node(s) asked, but '{pname}' takes jobs of at least {part.min_nodes} nodes")
    if part.max_nodes is not None and res.nodes > part.max_nodes:
        problems.append(f"{res.nodes} nodes asked, but '{pname}' allows at most {part.max_nodes} per job")
    max_time = part.max_time_seconds
    if res.time_seconds is not None and max_time is not None and res.time_seconds > max_time:
        problems.append(
            f"time {format_duration(res.time_seconds)} is over the limit of '{pname}' ({format_duration(max_time)})"
        )
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
    if _wants_gpu(spec):
        per_node = profile.gpus_per_node(part)
        return bool(per_node) and _gpu_count(spec, profile, part) >= (per_node or 0)
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

    kind = "gpu" if _wants_gpu(spec) else "cpu"
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
    raise LimitError(
        f"no partition of '{profile.name}' can run this job: " + "; ".join(dict.fromkeys(rejected)),
        "reduce nodes, GPUs or time in the spec's resources",
    )


def resolve(
    spec: JobSpec,
    loaded: LoadedProfile,
    config: UserConfig,
    overrides: Overrides | None = None,
    settings: Settings | None = None,
) -> ResolvedJob:
    """`settings`: the AIFACTORY_* values (settings.py); None is an empty environment."""
    profile = loaded.profile
    site = profile.name
    ov = overrides or Overrides()
    mine = config.for_site(site)
    res = spec.resources

    requested = ov.partition or res.partition or mine.partition
    pname, part = choose_partition(spec, profile, requested)
    warnings: list[str] = []
    account = (settings or Settings()).account_for(ov.account, mine.account)
    if account:
        _check_token(account, "account")
    if ov.qos or mine.qos:
        _check_token(ov.qos or mine.qos or "", "qos")

    # --- account / qos -------------------------------------------------------------------------
    if profile.scheduler == "slurm" and profile.account.required is None and not account:
        warnings.append(
            f"whether {site} needs a Slurm account is not known; none is set (add --account if the site asks for one)"
        )
    if profile.scheduler == "slurm" and profile.account.required and not account and ov.preview:
        account = ACCOUNT_PLACEHOLDER
        warnings.append(
            f"no account set for {site}: the script shows {ACCOUNT_PLACEHOLDER}; submit needs "
            f"--account, AIFACTORY_ACCOUNT or sites.{site}.account in the config file"
        )
    elif profile.scheduler == "slurm" and profile.account.required and not account:
        example = profile.account.example or "<your project account>"
        raise ConfigError(
            f"site '{site}' requires a Slurm account (project/budget), and none is set",
            f"pass --account {example}, set AIFACTORY_ACCOUNT, or add to the config file:  "
            f"sites: {{{site}: {{account: {example}}}}}",
        )
    if account and account != ACCOUNT_PLACEHOLDER and part and part.account_suffix:
        account = _with_suffix(account, pname or "", part.account_suffix, profile, warnings)
    if account and account != ACCOUNT_PLACEHOLDER and profile.account.pattern:
        import re

        if not re.fullmatch(profile.account.pattern, account):
            warnings.append(
                f"account '{account}' does not look like {site}'s form "
                f"({profile.account.example or profile.account.pattern})"
            )
    qos = ov.qos or mine.qos or (part.qos if part else None)
    if profile.account.qos_required and not qos:
        raise ConfigError(
            f"site '{site}' requires a QoS and none is set",
            f"pass --qos, or add `qos:` under sites.{site} in the config file",
        )

    # --- resources -----------------------------------------------------------------------------
    gpus = _gpu_count(spec, profile, part) if (part and _wants_gpu(spec)) else 0
    if profile.scheduler == "local" and _wants_gpu(spec):
        gpus = _local_gpus(spec, profile)
    if spec.launcher == "torchrun":
        tasks = 1
    elif res.tasks_per_node is not None:
        tasks = res.tasks_per_node
    else:
        tasks = gpus if gpus else 1
    if gpus and spec.launcher != "torchrun" and gpus % tasks and tasks % gpus:
        raise LimitError(
            f"{tasks} tasks per node cannot share {gpus} GPUs evenly",
            "use one task per GPU (leave tasks_per_node out) or a divisor/multiple of the GPU count",
        )
    if res.cpus_per_task is not None:
        cpus = res.cpus_per_task
    elif gpus and profile.cpus_per_gpu:
        cpus = max(1, (profile.cpus_per_gpu * gpus) // tasks)
    else:
        cpus = 1
    if profile.scheduler == "local" and res.nodes * tasks > local_task_limit():
        raise LimitError(
            f"the local site starts every task on this machine: {res.nodes} node(s) x {tasks} task(s) = "
            f"{res.nodes * tasks} processes, more than the {local_task_limit()} it allows",
            "use fewer nodes or tasks_per_node for a local run (the site runs them all as processes here)",
        )
    cores = profile.cores_per_node_of(part) if part else None
    if cores and tasks * cpus > cores:
        raise LimitError(
            f"{tasks} tasks x {cpus} CPUs per task = {tasks * cpus} cores per node, but nodes of "
            f"'{pname}' have {cores} usable cores",
            "lower tasks_per_node or cpus_per_task",
        )
    whole_node = bool(part and (part.whole_node or res.exclusive))
    node_gpus = (profile.gpus_per_node(part) if part else 0) or 0
    full_node_gpus = bool(gpus and gpus == node_gpus)
    if part and part.whole_node and gpus and gpus < node_gpus:
        warnings.append(
            f"'{pname}' allocates whole nodes: {gpus} of {node_gpus} GPUs asked, all {node_gpus} are billed"
        )

    memory_mib = res.memory_mib
    memory_per_gpu_mib = None
    if memory_mib is None and gpus and not whole_node and profile.memory_per_gpu:
        memory_per_gpu_mib = parse_memory(profile.memory_per_gpu)

    if res.time_seconds is not None:
        time_seconds = res.time_seconds
    else:
        default = (part.default_time if part and part.default_time else None) or profile.default_time
        if default is None:
            raise LimitError(
                f"the job has no time limit and {site}'s default for '{pname}' is not known (its sources do not say)",
                f"set resources.time in the spec (e.g. time: 2h), or default_time in a user profile extending {site}",
            )
        time_seconds = parse_duration(default)
        max_time = part.max_time_seconds if part else None
        if max_time is not None and time_seconds > max_time:
            time_seconds = max_time

    cpu_bind = None
    if whole_node and full_node_gpus and tasks == gpus and profile.binding.cpu_bind:
        cpu_bind = profile.binding.cpu_bind

    container_runtime = None
    if spec.container is not None:
        if profile.container.runtime == "none":
            raise LimitError(
                f"site '{site}' has no container runtime, but the spec has a 'container' block",
                "drop the container block for this site (sites: {" + site + ": {container: null}}) "
                "or run on a site with Singularity/Apptainer",
            )
        container_runtime = profile.container.runtime

    modules = [*(profile.modules_for(part) if part else profile.modules)]
    if container_runtime and profile.container.module and profile.container.module not in modules:
        modules.append(profile.container.module)
    modules += spec.modules
    # sbatch extras: the site's, then the partition's, then the spec's (null drops an inherited one)
    slurm_options = {**profile.slurm, **(part.slurm if part else {}), **spec.slurm}
    env = {**profile.env, **spec.env}
    if profile.scheduler == "slurm" and spec.array_size > SLURM_DEFAULT_MAX_ARRAY:
        warnings.append(
            f"the matrix has {spec.array_size} elements; Slurm's default MaxArraySize allows indexes up to "
            f"{SLURM_DEFAULT_MAX_ARRAY - 1} and {site} may refuse it (`scontrol show config | grep MaxArraySize`)"
        )
    if spec.array_size and spec.max_parallel and spec.max_parallel > spec.array_size:
        warnings.append(f"max_parallel {spec.max_parallel} is more than the {spec.array_size} elements")

    user = ov.user or mine.user or profile.ssh.user

    return ResolvedJob(
        site=site,
        profile=profile,
        spec=spec,
        name=spec.name or "job",
        partition_name=pname,
        partition=part,
        account=account,
        qos=qos,
        user=user,
        nodes=res.nodes,
        gpus_per_node=gpus,
        tasks_per_node=tasks,
        cpus_per_task=cpus,
        memory_mib=memory_mib,
        memory_per_gpu_mib=memory_per_gpu_mib,
        time_seconds=time_seconds,
        whole_node=whole_node,
        full_node_gpus=full_node_gpus,
        cpu_bind=cpu_bind,
        modules=modules,
        env=env,
        array_size=spec.array_size,
        max_parallel=spec.max_parallel,
        container_runtime=container_runtime,
        slurm_options=slurm_options,
        warnings=warnings,
    )


def _local_gpus(spec: JobSpec, profile: SiteProfile) -> int:
    """The local site's nodes share this machine's GPUs (`profile.gpu`, from nvidia-smi/rocm-smi)."""
    have = (profile.gpu.per_node if profile.gpu else 0) or 0
    nodes, asked = spec.resources.nodes, spec.resources.gpus_per_node
    per_node = have // nodes if asked == "all" else int(asked)
    if per_node < 1 or per_node * nodes > have:
        raise LimitError(
            f"{nodes} node(s) x {asked} GPUs asked, but this machine has {have} GPU(s) (nvidia-smi, rocm-smi)"
            if have
            else "the local site has no GPUs (nvidia-smi and rocm-smi list none here), but the job asks for some",
            "ask fewer GPUs or nodes here, or run GPU jobs on a GPU site (--site lumi, --site jupiter)",
        )
    return per_node


def _with_suffix(account: str, pname: str, suffix: str, profile: SiteProfile, warnings: list[str]) -> str:
    """The account for a partition that wants `<project><suffix>` (Deucalion: g GPU, x x86, a ARM).
    An account that ends with another partition's suffix has it swapped, with a warning."""
    if account.endswith(suffix):
        return account
    others = sorted(
        {p.account_suffix for p in profile.partitions.values() if p.account_suffix and p.account_suffix != suffix},
        key=len,
        reverse=True,
    )
    for other in others:
        if account.endswith(other) and len(account) > len(other):
            fixed = account[: -len(other)] + suffix
            warnings.append(
                f"'{pname}' takes the account with suffix '{suffix}': using {fixed} instead of {account} "
                f"(configure the project id without a suffix to silence this)"
            )
            return fixed
    return account + suffix
