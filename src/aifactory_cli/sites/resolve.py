"""resolve(spec, profile, config, overrides, settings): choose the partition, fill the site's defaults, and
refuse what the site cannot run, before anything is written or sent. Pure: the environment comes in
as a `Settings` argument (callers pass `settings.current()`), so nothing here reads it."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from aifactory_cli.errors import ConfigError, LimitError
from aifactory_cli.settings import Settings
from aifactory_cli.sites import pack, segments
from aifactory_cli.sites.pack import Pack
from aifactory_cli.sites.partition import choose_partition, gpu_count, local_gpus, wants_gpu
from aifactory_cli.sites.profile import LoadedProfile, Partition, SiteProfile
from aifactory_cli.sites.segments import SegmentPlan
from aifactory_cli.sites.userconfig import UserConfig
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
COMMENT_TOKEN_PREFIX = "aifactory:"
# a user's part of the Slurm comment: one #SBATCH word (JUPITER's PrEpS reads "THP=never;..." from it)
_USER_COMMENT_RE = re.compile(r"^[A-Za-z0-9_.,:=@%+/;-]{1,200}$")
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
    # environment the job's shell expands (site admin's values, e.g. OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK);
    # rendered as export KEY="value" (values are checked to hold only plain characters and $VAR)
    shell_env: dict[str, str] = field(default_factory=dict)
    # the user's own Slurm comment (slurm: {comment: ...}), kept beside aifactory's token: comment_for()
    user_comment: str | None = None
    slurm_options: dict[str, str | int | bool | None] = field(default_factory=dict)
    # `pack: true`: the sweep's elements as job steps side by side on whole nodes of one job (pack.py)
    pack: Pack | None = None
    # `checkpoint:`: the run as segments of `time_seconds` each (segments.py); None: one job
    segments: SegmentPlan | None = None
    warnings: list[str] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)

    def comment_for(self, token: str) -> str:
        """The job's `--comment`: aifactory's token first (how `sync` finds the job), then the user's
        own comment after a ';' (e.g. JUPITER's PrEpS tuning "THP=never")."""
        own = f"{COMMENT_TOKEN_PREFIX}{token}"
        return f"{own};{self.user_comment}" if self.user_comment else own

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
            **({"segments": self.segments.summary()} if self.segments else {}),
        }


def local_task_limit() -> int:
    """How many task processes a local job may start at once: generous for trying a multi-node
    layout out, but never an unbounded fork."""
    return max(64, 8 * (os.cpu_count() or 1))


def _check_token(value: str, what: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
        raise ConfigError(
            f"{what} {value!r} is not a valid Slurm {what} name",
            "use letters, digits, '_', '.', '-' (as your site's project/budget names are)",
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
    if (
        account
        and account != ACCOUNT_PLACEHOLDER
        and profile.account.pattern
        and not re.fullmatch(profile.account.pattern, account)
    ):
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
    gpus = gpu_count(spec, profile, part) if (part and wants_gpu(spec)) else 0
    if profile.scheduler == "local" and wants_gpu(spec):
        gpus = local_gpus(spec, profile)
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
    packed = pack.plan(spec, profile.scheduler, gpus, tasks, cpus, node_gpus)
    nodes = res.nodes
    if packed:  # the job: whole nodes with all their GPUs; each element a step on its share
        nodes, gpus, tasks = packed.nodes, node_gpus, packed.per_node * tasks
    full_node_gpus = bool(gpus and gpus == node_gpus)
    if part and part.whole_node and gpus and gpus < node_gpus:
        warnings.append(
            f"'{pname}' allocates whole nodes: {gpus} of {node_gpus} GPUs asked, all {node_gpus} are billed"
        )

    memory_mib = res.memory_mib
    memory_per_gpu_mib = None
    if memory_mib is None and gpus and not whole_node and profile.memory_per_gpu:
        memory_per_gpu_mib = parse_memory(profile.memory_per_gpu)
    if memory_mib is None and res.exclusive and part and not part.whole_node:
        memory_mib = _exclusive_memory(profile, part, pname, warnings)

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

    segment_plan = segments.plan(spec, profile, pname, part, time_seconds)
    if segment_plan:  # each Slurm job of the run asks for one segment; the script goes on while the total lasts
        time_seconds = segment_plan.segment_seconds

    cpu_bind = None
    if whole_node and full_node_gpus and tasks == gpus and profile.binding.cpu_bind:
        cpu_bind = profile.binding.cpu_bind

    container_runtime = _container_runtime(spec, profile)

    modules = [*(profile.modules_for(part) if part else profile.modules)]
    if container_runtime and profile.container.module and profile.container.module not in modules:
        modules.append(profile.container.module)
    modules += spec.modules
    # sbatch extras: the site's, then the partition's, then the spec's (null drops an inherited one)
    slurm_options = {**profile.slurm, **(part.slurm if part else {}), **spec.slurm}
    user_comment = _user_comment(slurm_options.pop("comment", None))
    env, shell_env = _layered_env(profile, part, spec)
    if profile.scheduler == "slurm" and spec.array_size > SLURM_DEFAULT_MAX_ARRAY:
        warnings.append(
            f"the matrix has {spec.array_size} elements; Slurm's default MaxArraySize allows indexes up to "
            f"{SLURM_DEFAULT_MAX_ARRAY - 1} and {site} may refuse it (`scontrol show config | grep MaxArraySize`)"
        )
    if spec.array_size and spec.max_parallel and spec.max_parallel > spec.array_size:
        warnings.append(f"max_parallel {spec.max_parallel} is more than the {spec.array_size} elements")

    # the user the job dir is named for: the one aifactory logs in as (AIFACTORY_SSH_USER first)
    user = ov.user or (settings or Settings()).ssh_user_for(mine.user, profile.ssh.user)

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
        nodes=nodes,
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
        shell_env=shell_env,
        user_comment=user_comment,
        slurm_options=slurm_options,
        pack=packed,
        segments=segment_plan,
        warnings=warnings,
    )


def _layered_env(profile: SiteProfile, part: Partition | None, spec: JobSpec) -> tuple[dict[str, str], dict[str, str]]:
    """(literal env, shell-expanded env): the site's, then the partition's, then the spec's, each layer
    winning over the one before whichever kind it is (a key ends up in one of the two only)."""
    env, shell_env = dict(profile.env), dict(profile.shell_env)
    layers = [(part.env, part.shell_env)] if part else []
    for literal, shell in [*layers, (spec.env, {})]:
        for key, value in literal.items():
            shell_env.pop(key, None)
            env[key] = value
        for key, value in shell.items():
            env.pop(key, None)
            shell_env[key] = value
    return env, shell_env


def _exclusive_memory(profile: SiteProfile, part: Partition, pname: str | None, warnings: list[str]) -> int | None:
    """`exclusive: true` on a partition allocatable by resources: --exclusive alone does not give the
    node's memory there (LUMI course, 201-Slurm: add --mem), so ask for the node's memory."""
    node_memory = profile.memory_per_node_of(part)
    if node_memory is None:
        warnings.append(
            f"exclusive: true on '{pname}', whose node memory is not known: Slurm gives only its default "
            "memory per CPU; set resources.memory to what you need"
        )
    return node_memory


def _container_runtime(spec: JobSpec, profile: SiteProfile) -> str | None:
    if spec.container is None:
        return None
    site = profile.name
    drop = "drop the container block for this site (sites: {" + site + ": {container: null}})"
    if profile.container.runtime is None:
        raise LimitError(
            f"whether {site} has a container runtime (Apptainer/Singularity) is not known: its sources do not say",
            f"{drop}, or set container.runtime in a user profile extending {site} once you know it",
        )
    if profile.container.runtime == "none":
        raise LimitError(
            f"site '{site}' has no container runtime, but the spec has a 'container' block",
            f"{drop} or run on a site with Singularity/Apptainer",
        )
    return profile.container.runtime


def _user_comment(value: str | int | bool | None) -> str | None:
    """The user's own `slurm: {comment: ...}`: kept beside aifactory's token (ResolvedJob.comment_for)."""
    if value is None or value is False:
        return None
    text = str(value)
    if value is True or not _USER_COMMENT_RE.match(text) or COMMENT_TOKEN_PREFIX in text:
        raise ConfigError(
            f"slurm.comment {text!r} cannot be kept beside aifactory's token",
            "use one word of letters, digits and _ . , : = @ % + / ; - (e.g. THP=never), without 'aifactory:'",
        )
    return text


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
