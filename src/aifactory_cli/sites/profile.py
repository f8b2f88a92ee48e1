"""Site profiles (admin-owned facts about a machine) and loading them. The user config: `sites/userconfig.py`."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aifactory_cli import paths
from aifactory_cli.errors import NotFound, ProfileError, did_you_mean
from aifactory_cli.paths import available_sites
from aifactory_cli.spec.slurmopts import check_slurm_options, deep_merge
from aifactory_cli.spec.yamlio import YamlDoc, format_validation_error, load_yaml_file
from aifactory_cli.transport.ssh.settings import SshSettings
from aifactory_cli.units import parse_duration, parse_memory

SITE_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
WORKDIR_DERIVED = ("account_lower", "project", "project_upper")  # SiteProfile.workdir_values


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Source(_Strict):
    title: str
    url: str
    snapshot: str | None = None


class GpuInfo(_Strict):
    vendor: Literal["amd", "nvidia"]
    model: str
    per_node: int | None = Field(None, ge=1, description="None: unknown (never invented)")
    # where per_node is unknown: the most GPUs any node of this kind can hold, so a request that no
    # node can satisfy is refused before it is sent (e.g. an 8-GPU HGX board)
    max_per_node: int | None = Field(None, ge=1)
    memory: str | None = None
    request: Literal["gpus-per-node", "gres", "gpus-per-task", "gpus"] = "gpus-per-node"
    gres_name: str = "gpu"
    # written unquoted as a variable name in job scripts (`export NAME=...`): a name, nothing else
    visible_devices_env: str = Field("CUDA_VISIBLE_DEVICES", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class Billing(_Strict):
    unit: str
    formula: Literal["node_hours", "lumi_shared_gpu", "lumi_shared_cpu", "gpu_hours", "core_hours"]
    rate: float = 1.0
    note: str | None = None


# a value the job's shell expands: `$VAR`/`${VAR}` references and plain characters only, so it can be
# written between double quotes (no command substitution, quotes, backslashes or backticks)
SHELL_ENV_VALUE_RE = re.compile(r"^(?:[A-Za-z0-9_./:,=@%+-]|\$[A-Za-z_][A-Za-z0-9_]*|\$\{[A-Za-z_][A-Za-z0-9_]*\})*$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_env(v: dict[str, str], shell: bool) -> dict[str, str]:
    for key, value in v.items():
        if not ENV_NAME_RE.match(key) or key.startswith("AIF_"):
            raise ValueError(f"'{key}' is not an environment variable name a profile may set")
        if shell and not SHELL_ENV_VALUE_RE.match(value):
            raise ValueError(
                f"shell_env.{key}: {value!r} may hold only plain characters and $VAR / ${{VAR}} references"
            )
    return v


class Partition(_Strict):
    """A partition, or a partition + QoS pair (then `slurm_name` is the Slurm partition and the key
    is a name for the pair, e.g. `boost-dbg` = boost_usr_prod + QoS boost_qos_dbg)."""

    kind: Literal["gpu", "cpu"]
    slurm_name: str | None = None
    # False: render no --partition line, Slurm's default partition is used (for sites whose
    # partition names the sources do not give)
    partition_flag: bool = True
    whole_node: bool = False
    auto: bool = True
    min_nodes: int | None = Field(None, ge=1, description="smaller jobs are refused (e.g. Leonardo bprod: 65)")
    max_nodes: int | None = Field(None, ge=1)
    max_time: str | None = Field(None, description="None: unknown (never invented)")
    default_time: str | None = None
    gpus_per_node: int | None = Field(None, ge=0)
    cores_per_node: int | None = Field(None, ge=1)
    memory_per_node: str | None = None
    modules: list[str] | None = None
    qos: str | None = None
    # appended to the account for this partition (Deucalion: <project>g for GPUs, <project>x for x86)
    account_suffix: str | None = Field(None, pattern=r"^[A-Za-z0-9_]+$")
    # extra sbatch options for jobs on this partition, on top of the site's `slurm:`
    slurm: dict[str, str | int | bool | None] = Field(default_factory=dict)
    billing: Billing | None = None
    # environment for jobs on this partition, on top of the site's (`env` literal, `shell_env` expanded)
    env: dict[str, str] = Field(default_factory=dict)
    shell_env: dict[str, str] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)

    @field_validator("slurm", mode="before")
    @classmethod
    def _slurm(cls, v: Any) -> Any:
        return check_slurm_options(v, "a profile cannot override it")

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_env(v, shell=False)

    @field_validator("shell_env")
    @classmethod
    def _shell_env(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_env(v, shell=True)

    @model_validator(mode="after")
    def _nodes(self) -> Partition:
        if self.min_nodes and self.max_nodes and self.min_nodes > self.max_nodes:
            raise ValueError(f"min_nodes {self.min_nodes} is more than max_nodes {self.max_nodes}")
        return self

    @field_validator("max_time", "default_time")
    @classmethod
    def _time(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("memory_per_node")
    @classmethod
    def _mem(cls, v: str | None) -> str | None:
        if v is not None:
            parse_memory(v)
        return v

    @property
    def max_time_seconds(self) -> int | None:
        return parse_duration(self.max_time) if self.max_time else None


class Binding(_Strict):
    """How tasks are pinned to cores and GPUs on a whole node."""

    cpu_bind: str | None = None
    gpu_select: Literal["wrapper", "gpu-bind", "slurm"] = "slurm"
    gpu_bind: str | None = None
    notes: list[str] = Field(default_factory=list)


class AccountPolicy(_Strict):
    required: bool | None = Field(True, description="None: unknown whether the site needs one")
    pattern: str | None = None
    example: str | None = None
    qos_required: bool = False


class ContainerRuntime(_Strict):
    # None: the sources do not say whether the site has one (a container job is refused, saying so)
    runtime: Literal["singularity", "apptainer", "none"] | None = "none"
    module: str | None = Field(None, description="loaded before a container job runs (MN5: singularity)")
    options: list[str] = Field(default_factory=list)
    # added to the runtime's options when the job has GPUs; None: --nv for NVIDIA GPUs, nothing for
    # AMD (ROCm images bring their own ROCm and see /dev/kfd, /dev/dri; a site may set [--rocm])
    gpu_options: list[str] | None = None
    notes: list[str] = Field(default_factory=list)


class SlurmRuns(_Strict):
    """What the site runs, as its sources say (`sites check` records what it finds live)."""

    slurm_version: str | None = Field(None, description="Slurm version the sources name, e.g. 24.05; null: unknown")
    compute: Literal["slurmd", "psslurm"] = Field(
        "slurmd", description="what starts jobs on the compute nodes: Slurm's slurmd or ParaStation's psslurm"
    )
    source: str | None = Field(None, description="where this is from (a page and its date)")


class SiteProfile(_Strict):
    """An aifactory site profile: the facts about one machine (partitions, limits, GPUs, binding,
    modules, container runtime, work dir, SSH). The file name is the site name."""

    version: int = Field(ge=1, description="profile format version")
    name: str = Field("", description="set from the file name")
    description: str = ""
    verified: dt.date | None = Field(None, description="when the facts were last checked against the sources")
    sources: list[Source] = Field(default_factory=list, description="where the facts come from")
    scheduler: Literal["slurm", "local"] = "slurm"
    template: str | None = Field(None, description="job script template (templates/slurm/<name>.sh.j2); default: base")
    cluster: str | None = Field(None, description="Slurm cluster name (--clusters)")
    runs: SlurmRuns | None = Field(None, description="what the site runs (Slurm version, slurmd or psslurm)")
    cpu_arch: Literal["x86_64", "aarch64"] | None = Field("x86_64", description="None: unknown")
    cores_per_node: int | None = Field(None, ge=1)
    memory_per_node: str | None = None
    gpu: GpuInfo | None = None
    cpus_per_gpu: int | None = Field(None, ge=1)
    memory_per_gpu: str | None = None
    binding: Binding = Field(default_factory=lambda: Binding())
    account: AccountPolicy = Field(default_factory=lambda: AccountPolicy())
    modules: list[str] = Field(default_factory=list, description="base modules for every job")
    module_command: str = "module load"
    container: ContainerRuntime = Field(default_factory=lambda: ContainerRuntime())
    workdir: str = Field(
        "$HOME/aifactory/jobs/{job}",
        description="job directory on the site; placeholders {job} {name} {user} {account} {site} "
        "{account_lower} {project} {project_upper}",
    )
    data_dir: str | None = Field(
        None,
        description="store of data: entries; workdir's placeholders but {job} {name}; default: '.data' by the job dirs",
    )
    env: dict[str, str] = Field(default_factory=dict, description="environment for every job (literal values)")
    # environment the job's shell expands at run time (OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK), written
    # by the site admin; checked to hold only plain characters and $VAR references
    shell_env: dict[str, str] = Field(default_factory=dict)
    # extra sbatch options for every job on the site (a spec's own `slurm:` wins; null drops one)
    slurm: dict[str, str | int | bool | None] = Field(default_factory=dict)
    poll_interval: float = Field(10.0, ge=0, description="seconds between status polls, at least")
    # Slurm's default (slurm.conf(5) JobRequeue=1: batch jobs may be requeued; `scontrol requeue` by the
    # job's owner); a site that sets JobRequeue=0 or refuses user requeues says false
    requeue: bool = Field(
        True,
        description="the site lets a job requeue itself: a checkpointed run's next segment is a requeue "
        "of the same job (false: a new job depending on the segment's)",
    )
    usage_command: list[str] | None = Field(None, description="the site's allocation tool, e.g. [lumi-allocations]")
    ssh: SshSettings = Field(default_factory=lambda: SshSettings())
    default_time: str | None = Field(None, description="time limit of a job that gives none")
    partitions: dict[str, Partition] = Field(default_factory=dict, description="partitions by name")
    notes: list[str] = Field(default_factory=list)

    @field_validator("default_time")
    @classmethod
    def _time(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("slurm", mode="before")
    @classmethod
    def _slurm(cls, v: Any) -> Any:
        return check_slurm_options(v, "a profile cannot override it")

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_env(v, shell=False)

    @field_validator("shell_env")
    @classmethod
    def _shell_env(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_env(v, shell=True)

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, v: str | None) -> str | None:
        allowed = {"user", "account", "site", *WORKDIR_DERIVED}
        for field in re.findall(r"{([^}]*)}", v or ""):
            if field not in allowed:
                raise ValueError(f"data_dir placeholder '{{{field}}}' is unknown; use {', '.join(sorted(allowed))}")
        return v

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v: str) -> str:
        allowed = {"job", "name", "user", "account", "site", *WORKDIR_DERIVED}
        for field in re.findall(r"{([^}]*)}", v):
            if field not in allowed:
                raise ValueError(f"workdir placeholder '{{{field}}}' is unknown; use {', '.join(sorted(allowed))}")
        return v

    @model_validator(mode="after")
    def _check(self) -> SiteProfile:
        problems = []  # every one at once: `sites validate` reports all in one run
        if self.scheduler == "slurm" and not self.partitions:
            problems.append("a Slurm site needs at least one partition under 'partitions'")
        gpu_parts = [p for p, part in self.partitions.items() if part.kind == "gpu"]
        if gpu_parts and self.gpu is None:
            names = ", ".join(f"'{p}'" for p in gpu_parts)
            problems.append(f"GPU partition(s) {names} but the site has no 'gpu' block")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --- derived -------------------------------------------------------------------------------

    def workdir_values(self, account: str | None) -> dict[str, str]:
        """The derived workdir placeholders for `account`: `account_lower` (Karolina's project dirs are
        the lower-cased project id), `project` (the account without a partition's suffix: Deucalion's
        <project>g / <project>x) and `project_upper` (Deucalion's /projects/<PROJECT>)."""
        if not account:
            return {}
        project = account
        suffixes = sorted({p.account_suffix for p in self.partitions.values() if p.account_suffix}, key=len)
        for suffix in reversed(suffixes):
            if account.endswith(suffix) and len(account) > len(suffix):
                project = account[: -len(suffix)]
                break
        return {"account_lower": account.lower(), "project": project, "project_upper": project.upper()}

    @property
    def data_dir_template(self) -> str:
        """`data_dir`, or `.data` beside the job dirs (the job dirs' parent from `workdir`)."""
        if self.data_dir:
            return self.data_dir
        return f"{self.workdir.rstrip('/').rpartition('/')[0] or '.'}/.data"

    def gpus_per_node(self, partition: Partition) -> int | None:
        """GPUs per node of `partition`: 0 for CPU partitions, None when the sources do not say."""
        if partition.gpus_per_node is not None:
            return partition.gpus_per_node
        if self.gpu and partition.kind == "gpu":
            return self.gpu.per_node
        return 0

    def cores_per_node_of(self, partition: Partition) -> int | None:
        return partition.cores_per_node or self.cores_per_node

    def memory_per_node_of(self, partition: Partition) -> int | None:
        mem = partition.memory_per_node or self.memory_per_node
        return parse_memory(mem) if mem else None

    def modules_for(self, partition: Partition) -> list[str]:
        return list(partition.modules) if partition.modules is not None else list(self.modules)

    @property
    def template_name(self) -> str:
        return self.template or "base"


# --- loading ----------------------------------------------------------------------------------


class LoadedProfile:
    """A resolved profile (extends applied) with its origin and a content hash."""

    def __init__(self, profile: SiteProfile, files: list[Path], merged: dict[str, Any]) -> None:
        self.profile = profile
        self.files = files
        self.merged = merged

    @property
    def name(self) -> str:
        return self.profile.name

    @cached_property
    def digest(self) -> str:
        text = json.dumps(self.merged, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def find_profile_file(name: str, exclude: Path | None = None) -> Path | None:
    for directory in paths.profile_search_path():
        candidate = directory / f"{name}.yaml"
        if candidate.is_file() and (exclude is None or candidate.resolve() != exclude.resolve()):
            return candidate
    return None


def _load_chain(path: Path, seen: list[Path]) -> tuple[dict[str, Any], list[Path], YamlDoc]:
    if path.resolve() in [p.resolve() for p in seen]:
        chain = " -> ".join(p.stem for p in [*seen, path])
        raise ProfileError(f"'extends' makes a cycle: {chain}", "remove one of the extends", where=str(path))
    doc = load_yaml_file(path, ProfileError, what="site profile")
    data = doc.data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProfileError("a site profile must be a YAML mapping", where=str(path))
    parent_name = data.get("extends")
    if parent_name is None:
        return data, [path], doc
    if not isinstance(parent_name, str):
        raise ProfileError("'extends' must be a site name", where=f"{path}:{doc.line_of(('extends',))}")
    # a profile may extend a built-in of the same name (a user's lumi.yaml over the shipped one)
    parent = find_profile_file(parent_name, exclude=path if parent_name == path.stem else None)
    if parent is None:
        guess = did_you_mean(parent_name, available_sites())
        raise ProfileError(
            f"extends '{parent_name}', but no such profile exists",
            f"did you mean '{guess}'?" if guess else f"known sites: {', '.join(available_sites())}",
            where=f"{path}:{doc.line_of(('extends',))}",
        )
    base, files, _ = _load_chain(parent, [*seen, path])
    own = {k: v for k, v in data.items() if k != "extends"}
    return deep_merge(base, own), [*files, path], doc


def load_profile_file(path: Path, name: str | None = None) -> LoadedProfile:
    merged, files, doc = _load_chain(path, [])
    merged = dict(merged)
    merged["name"] = name or path.stem
    try:
        profile = SiteProfile.model_validate(merged)
    except ValidationError as exc:
        raise format_validation_error(exc, doc, SiteProfile, ProfileError) from exc
    return LoadedProfile(profile, files, merged)


def local_profile() -> LoadedProfile:
    path = paths.builtin_profiles_dir() / "local.yaml"
    return load_profile_file(path, "local")


def load_profile(name: str) -> LoadedProfile:
    if not SITE_NAME_RE.match(name):
        raise NotFound(f"'{name}' is not a site name", "site names are lower-case, like lumi or jupiter")
    path = find_profile_file(name)
    if path is None:
        sites = available_sites()
        guess = did_you_mean(name, sites)
        raise NotFound(
            f"unknown site '{name}'",
            (f"did you mean '{guess}'? " if guess else "")
            + f"known sites: {', '.join(sites)} (add one with a profile in {paths.user_profiles_dir()})",
        )
    return load_profile_file(path, name)
