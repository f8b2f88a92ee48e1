"""The portable job spec (version 1): what a job needs, in no site's words."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from aifactory_cli.errors import SpecError
from aifactory_cli.spec.checkpoint import Checkpoint
from aifactory_cli.spec.slurmopts import (  # noqa: F401  (MERGED_..., protected_...: re-exported)
    MERGED_SLURM_OPTIONS,
    check_slurm_options,
    deep_merge,
    protected_slurm_options,
)
from aifactory_cli.spec.yamlio import YamlDoc, format_validation_error, load_yaml_file, parse_yaml
from aifactory_cli.units import parse_duration, parse_memory

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Scalar = str | int | float | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Resources(_Strict):
    nodes: int = Field(1, ge=1, description="number of nodes")
    gpus_per_node: int | Literal["all"] = Field(0, description="GPUs per node, or 'all'")
    tasks_per_node: int | None = Field(None, ge=1, description="tasks (processes) per node; default: one per GPU")
    cpus_per_task: int | None = Field(None, ge=1, description="CPU cores per task; default: the site's share")
    memory: str | int | None = Field(None, description="memory per node, e.g. 64G or 500M (a number: MiB)")
    time: str | int | None = Field(
        None, description="time limit: 1:00:00, 2-00:00:00, 90m, 2h (a number: seconds, as YAML reads 1:00:00)"
    )
    partition: str | None = Field(None, description="a partition of the site's profile; default: picked for the job")
    exclusive: bool = Field(False, description="whole nodes for this job alone")
    # which GPUs each task sees: "all" = every GPU the job has on the node (PyTorch style:
    # torch.cuda.set_device(LOCAL_RANK)); "per_task" = only its own share (MPI style: device 0)
    gpu_binding: Literal["all", "per_task"] = Field(
        "all", description="all: each task sees every GPU of the job on its node; per_task: only its own"
    )

    @field_validator("gpus_per_node", mode="before")
    @classmethod
    def _gpus(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("gpus_per_node must be a number or 'all'")
        if isinstance(v, int) and v < 0:
            raise ValueError("gpus_per_node cannot be negative")
        if isinstance(v, str) and v != "all":
            if v.isdigit():
                return int(v)
            raise ValueError(f"gpus_per_node must be a number or 'all', not '{v}'")
        return v

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: Any) -> Any:
        if v is not None:
            parse_memory(v)
        return v

    @field_validator("time")
    @classmethod
    def _time(cls, v: Any) -> Any:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("partition")
    @classmethod
    def _partition(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError(f"'{v}' is not a partition name (letters, digits, '.', '_', '-')")
        return v

    @property
    def time_seconds(self) -> int | None:
        return parse_duration(self.time) if self.time is not None else None

    @property
    def memory_mib(self) -> int | None:
        return parse_memory(self.memory) if self.memory is not None else None


class Container(_Strict):
    image: str = Field(description="container image: a .sif path on the site, or docker://...")
    bind: list[str] = Field(default_factory=list, description="bind mounts, src[:dest]")
    options: list[str] = Field(default_factory=list, description="extra runtime options, e.g. --rocm")

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if not v.strip() or "\n" in v:
            raise ValueError("container image must be a non-empty single line")
        return v


class Requires(_Strict):
    """Constraints on the site itself (used by the broker to rule sites out)."""

    gpu_vendor: Literal["amd", "nvidia"] | None = Field(None, description="only sites with GPUs of this vendor")
    cpu_arch: Literal["x86_64", "aarch64"] | None = Field(None, description="only sites with this CPU architecture")


class JobSpec(_Strict):
    """An aifactory job spec (version 1): what a job needs, in no site's words."""

    version: Literal[1] = Field(1, description="spec format version")
    name: str | None = Field(None, description="job name; default: the spec file's name")
    description: str | None = Field(None, description="free text")
    resources: Resources = Field(default_factory=lambda: Resources(), description="what the job asks for")
    container: Container | None = Field(None, description="run inside this container image")
    modules: list[str] = Field(default_factory=list, description="modules loaded on top of the site's")
    env: dict[str, str] = Field(default_factory=dict, description="environment variables for the job")
    setup: str | None = Field(None, description="shell commands run once before the job's tasks start")
    run: str = Field(description="the work: shell commands each task runs (or the script torchrun starts)")
    launcher: Literal["srun", "torchrun", "none"] = Field(
        "srun", description="srun: one task per slot; torchrun: one per node; none: run as the batch script"
    )
    upload: list[str] = Field(default_factory=list, description="files and directories sent, relative to the spec")
    data: list[str] = Field(
        default_factory=list,
        description="files and directories kept in the site's content-addressed data store (sent once, "
        "checked by sha256) and linked read-only into the job dir, relative to the spec",
    )
    download: list[str] = Field(default_factory=list, description="glob patterns fetched from the job directory")
    # a sweep: {KEY: [values...]} (every combination), or an explicit list of elements [{KEY: value}, ...]
    matrix: dict[str, list[str]] | list[dict[str, str]] = Field(
        default_factory=dict,
        description="a sweep: {KEY: [values]} (every combination) or a list of elements [{KEY: value}]",
    )
    max_parallel: int | None = Field(None, ge=1, description="array concurrency limit (%N)")
    # a sweep as job steps packed onto whole nodes of ONE job (JSC: srun --exclusive -n 1 --gres=gpu:1 &)
    pack: bool = Field(False, description="run the sweep as steps packed onto whole nodes of one job")
    depends_on: list[str] = Field(default_factory=list, description="jobs (names or ids) that must finish first")
    requires: Requires = Field(default_factory=lambda: Requires(), description="rule out sites for the broker")
    checkpoint: Checkpoint | None = Field(
        None, description="run in segments: the program is signalled before each ends, saves, and is started again"
    )
    retries: int = Field(0, ge=0, description="restarts after NODE_FAIL, PREEMPTED or a requeue by the site")
    sites: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-site overrides: {site: {any spec field}}, merged over the spec"
    )
    slurm: dict[str, str | int | bool | None] = Field(
        default_factory=dict, description="extra sbatch long options ({option: value}; true: a flag; null: none)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not NAME_RE.match(v):
            raise ValueError(
                f"'{v}' is not a valid name: use letters, digits, '-', '_', '.' (at most 64, "
                "starting with a letter or digit)"
            )
        return v

    @field_validator("run", "setup", "name", "description", mode="before")
    @classmethod
    def _text(cls, v: Any, info: Any) -> Any:
        if v is not None and not isinstance(v, str):
            shown = str(v).lower() if isinstance(v, bool) else repr(v)
            raise ValueError(
                f"{info.field_name} must be text, but YAML read {shown} as a {type(v).__name__}: "
                f'quote it ({info.field_name}: "{shown}")'
            )
        return v

    @field_validator("run")
    @classmethod
    def _run(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("run must not be empty: it is the work the job does")
        return v.rstrip()

    @field_validator("setup")
    @classmethod
    def _setup(cls, v: str | None) -> str | None:
        return v.rstrip() if v is not None and v.strip() else None

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: Any) -> Any:
        if isinstance(v, dict):
            out = {}
            for key, value in v.items():
                if not isinstance(key, str) or not ENV_NAME_RE.match(key):
                    raise ValueError(f"'{key}' is not a valid environment variable name")
                if key.startswith("AIF_"):
                    raise ValueError(f"env.{key}: names starting with AIF_ are set by aifactory in the job")
                if isinstance(value, (dict, list)) or value is None:
                    raise ValueError(f"env.{key} must be a single value (a string or number)")
                out[key] = _scalar_text(value)
            return out
        return v

    @field_validator("matrix", mode="before")
    @classmethod
    def _matrix(cls, v: Any) -> Any:
        if isinstance(v, list):  # explicit elements, e.g. the failed ones of a sweep (`rerun`)
            if not v:
                raise ValueError("matrix: an explicit list of elements must not be empty")
            elements = []
            for n, element in enumerate(v):
                if not isinstance(element, dict) or not element:
                    raise ValueError(f"matrix[{n}] must be a mapping of variable names to values, like {{LR: 0.1}}")
                out_e = {}
                for key, value in element.items():
                    if not isinstance(key, str) or not ENV_NAME_RE.match(key):
                        raise ValueError(f"matrix[{n}]: '{key}' must be a valid environment variable name")
                    if key.startswith("AIF_"):
                        raise ValueError(f"matrix[{n}].{key}: names starting with AIF_ are set by aifactory in the job")
                    if isinstance(value, (dict, list)) or value is None:
                        raise ValueError(f"matrix[{n}].{key} must be a single value (a string or number)")
                    out_e[key] = _scalar_text(value)
                elements.append(out_e)
            return elements
        if isinstance(v, dict):
            out = {}
            for key, values in v.items():
                if not isinstance(key, str) or not ENV_NAME_RE.match(key):
                    raise ValueError(f"matrix key '{key}' must be a valid environment variable name")
                if key.startswith("AIF_"):
                    raise ValueError(f"matrix.{key}: names starting with AIF_ are set by aifactory in the job")
                if not isinstance(values, list) or not values:
                    raise ValueError(f"matrix.{key} must be a non-empty list of values")
                if any(isinstance(x, (dict, list)) or x is None for x in values):
                    raise ValueError(f"matrix.{key} values must be strings or numbers")
                out[key] = [_scalar_text(x) for x in values]
            return out
        return v

    @field_validator("modules")
    @classmethod
    def _modules(cls, v: list[str]) -> list[str]:
        for mod in v:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+/-]*", mod):
                raise ValueError(f"'{mod}' is not a module name (like PyTorch/2.3.1 or partition/G)")
        return v

    @field_validator("upload", "data")
    @classmethod
    def _upload(cls, v: list[str], info: ValidationInfo) -> list[str]:
        for item in v:
            p = PurePosixPath(item)
            if p.is_absolute() or ".." in p.parts or not item.strip():
                raise ValueError(
                    f"{info.field_name} entry '{item}' must be a path relative to the spec file, without '..'"
                )
        return v

    @field_validator("download")
    @classmethod
    def _download(cls, v: list[str]) -> list[str]:
        for item in v:
            p = PurePosixPath(item)
            if p.is_absolute() or ".." in p.parts or not item.strip():
                raise ValueError(f"download pattern '{item}' must be relative to the job directory")
        return v

    @field_validator("slurm", mode="before")
    @classmethod
    def _slurm(cls, v: Any) -> Any:
        return check_slurm_options(v, "use the spec's own field instead (resources, name, depends_on, matrix)")

    @model_validator(mode="after")
    def _launcher_vs_tasks(self) -> JobSpec:
        if self.launcher == "torchrun" and self.resources.tasks_per_node not in (None, 1):
            raise ValueError("launcher torchrun starts one task per node; drop resources.tasks_per_node")
        if self.launcher == "torchrun" and self.resources.gpu_binding == "per_task":
            raise ValueError(
                "launcher torchrun starts one task per node whose workers share the node's GPUs; "
                "use resources.gpu_binding: all (each worker picks cuda:LOCAL_RANK)"
            )
        return self

    # --- derived -------------------------------------------------------------------------------

    @property
    def array_size(self) -> int:
        if isinstance(self.matrix, list):
            return len(self.matrix)
        size = 1
        for values in self.matrix.values():
            size *= len(values)
        return size if self.matrix else 0

    def matrix_elements(self) -> list[dict[str, str]]:
        """The elements of the sweep: the explicit list, or the cartesian product of the matrix in a
        stable order (first key varies slowest)."""
        import itertools

        if isinstance(self.matrix, list):
            return [dict(e) for e in self.matrix]
        if not self.matrix:
            return []
        keys = list(self.matrix)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.matrix.values())]


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class LoadedSpec:
    """A spec with where it came from (for relative uploads and error messages)."""

    def __init__(self, spec: JobSpec, raw: dict[str, Any], path: Path | None, doc: YamlDoc | None) -> None:
        self.spec = spec
        self.raw = raw
        self.path = path
        self.doc = doc

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def for_site(self, site: str) -> JobSpec:
        """The spec with `sites.<site>` overrides applied."""
        override = self.raw.get("sites", {}).get(site)
        if not override:
            return self.spec
        merged = deep_merge({k: v for k, v in self.raw.items() if k != "sites"}, override)
        return _validate(merged, self.doc, prefix=("sites", site))


def _validate(data: Any, doc: YamlDoc | None, prefix: tuple[str, ...] = ()) -> JobSpec:
    if not isinstance(data, dict):
        where = doc.source if doc else None
        raise SpecError(
            "a job spec must be a YAML mapping (keys like name, resources, run)",
            "see examples/hello.yaml",
            where=where,
        )
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(exc, doc, JobSpec, SpecError, prefix=prefix) from exc


def load_spec(path: Path | str) -> LoadedSpec:
    path = Path(path)
    doc = load_yaml_file(path, SpecError, what="job spec")
    return spec_from_doc(doc, path)


def load_spec_text(text: str, source: str = "<spec>", path: Path | None = None) -> LoadedSpec:
    return spec_from_doc(parse_yaml(text, source, SpecError), path)


def spec_from_doc(doc: YamlDoc, path: Path | None) -> LoadedSpec:
    data = doc.data
    spec = _validate(data, doc)
    if spec.name is None:
        stem = path.stem if path else "job"
        name = re.sub(r"[^A-Za-z0-9._-]", "-", stem)[:64] or "job"
        data = {**data, "name": name}
        spec = spec.model_copy(update={"name": name})
    loaded = LoadedSpec(spec, data, path, doc)
    # validate every site override now, so a typo under any site is reported at once
    for site in spec.sites:
        loaded.for_site(site)
    return loaded
