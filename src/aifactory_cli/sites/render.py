"""Rendering a resolved job into a batch script with Jinja (StrictUndefined, every user value
through `sh_quote`; values on `#SBATCH` lines through `sbatch_value`, which refuses anything that
is not a plain token)."""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from aifactory_cli import paths
from aifactory_cli.errors import BadInput, ProfileError
from aifactory_cli.jobs import jobdir

if TYPE_CHECKING:
    import jinja2

    from aifactory_cli.sites.resolve import ResolvedJob

_SBATCH_SAFE = re.compile(r"^[A-Za-z0-9_.,:=@%+/\[\]&|!*-]+$")


def sh_quote(value: Any) -> str:
    """Quote any value for a POSIX shell: the result is always one literal word."""
    return shlex.quote(str(value))


def sbatch_value(value: Any, what: str = "value") -> str:
    """A value for an `#SBATCH` line: sbatch does not parse these with a shell, so only plain
    tokens are allowed (no spaces, quotes, newlines or `$`)."""
    text = str(value)
    if not _SBATCH_SAFE.match(text):
        raise BadInput(
            f"{what} {text!r} cannot go on an #SBATCH line",
            "use only letters, digits and _ . , : = @ % + / - [ ] & | ! *",
        )
    return text


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    import jinja2

    cache = None
    try:  # compiled templates are cached in the state dir: no compile() on every run
        cache_dir = paths.ensure_private_dir(paths.state_dir() / "cache" / "jinja")
        cache = jinja2.FileSystemBytecodeCache(str(cache_dir))
    except OSError:
        pass
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(paths.templates_dir())),
        bytecode_cache=cache,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["sh_quote"] = sh_quote
    env.filters["sbatch_value"] = sbatch_value
    return env


@dataclass
class Rendered:
    script: str
    template: str
    template_digest: str

    def provenance_hash(self, profile_digest: str) -> str:
        return hashlib.sha256(f"{self.template_digest}:{profile_digest}".encode()).hexdigest()


def template_digest(name: str) -> str:
    """Hash of a template and everything it extends (so provenance changes when any of them does)."""
    h = hashlib.sha256()
    seen: set[str] = set()
    todo = [f"{name}.sh.j2"]
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        text = (paths.templates_dir() / file).read_text(encoding="utf-8")
        h.update(file.encode() + b"\0" + text.encode())
        todo.extend(re.findall(r"{%-?\s*(?:extends|include|import)\s+['\"]([^'\"]+)['\"]", text))
    return h.hexdigest()


def _template(job: ResolvedJob) -> jinja2.Template:
    import jinja2

    name = job.profile.template_name
    try:
        return _environment().get_template(f"{name}.sh.j2")
    except jinja2.TemplateNotFound as exc:
        raise ProfileError(
            f"site '{job.site}' names template '{name}', but templates/slurm/{name}.sh.j2 does not exist",
            "fix `template:` in the profile (or leave it out for the base template)",
        ) from exc


def render(job: ResolvedJob, token: str, job_id: str) -> Rendered:
    import jinja2

    name = job.profile.template_name
    template = _template(job)
    context = _context(job, token, job_id)
    try:
        script = template.render(**context)
    except jinja2.UndefinedError as exc:
        raise ProfileError(f"template '{name}' uses an undefined value: {exc.message}") from exc
    return Rendered(script=script, template=name, template_digest=template_digest(name))


# the blocks of the batch script that give a step inside the job the job's modules and environment
STEP_BLOCKS = ("modules", "environment")


def step_environment(job: ResolvedJob, token: str, job_id: str) -> str:
    """The shell text of the batch script's `modules` and `environment` blocks, from the site's own
    template (a site template that overrides them is honoured): what `aifactory exec`/`shell` run in
    their step before the command, so that it sees what the job's tasks see."""
    import jinja2

    template = _template(job)
    ctx = template.new_context(_context(job, token, job_id))
    try:
        for _ in template.root_render_func(ctx):  # running it links the blocks of every parent template
            pass
        return "".join("".join(ctx.blocks[name][0](ctx)) for name in STEP_BLOCKS if name in ctx.blocks)
    except jinja2.UndefinedError as exc:
        raise ProfileError(f"template '{job.profile.template_name}' uses an undefined value: {exc.message}") from exc


def _context(job: ResolvedJob, token: str, job_id: str) -> dict[str, Any]:
    elements = job.spec.matrix_elements()
    return {
        "job": job,
        "spec": job.spec,
        "profile": job.profile,
        "token": token,
        "job_id": job_id,
        "elements": elements,
        "dependencies": job.dependencies,
        "extra_slurm": _extra_slurm(job.slurm_options),
        "jobdir": jobdir.template_names(),
        "gpu_lines": gpu_visibility(job),
        "container_options": container_options(job),
        "gpu_env": visible_devices_env(job),
        "step_memory": _step_memory(job),
    }


def _extra_slurm(options: dict[str, Any]) -> list[str]:
    out = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        if value is True:
            out.append(f"--{key}")
        else:
            out.append(f"--{key}={sbatch_value(value, f'slurm.{key}')}")
    return out


def visible_devices_env(job: ResolvedJob) -> str:
    gpu = job.profile.gpu
    return gpu.visible_devices_env if gpu else "CUDA_VISIBLE_DEVICES"


def gpu_visibility(job: ResolvedJob) -> list[str]:
    """Shell lines, run in each task after its ranks are set, that give it the GPUs
    `resources.gpu_binding` says (README, "The launch contract").

    all: every GPU the job has on the node. With all of a node's GPUs this is 0..G-1, exported
      explicitly, because some sites' Slurm shows each task only one (JSC: "only one GPU is visible
      to task. Please manually export CUDA_VISIBLE_DEVICES=0,1,2,3"); otherwise Slurm's own value
      (the step's GPUs on the node) is kept.
    per_task: task LOCAL_RANK gets its share of the node's list, as LUMI's select_gpu wrapper does
      (ROCR_VISIBLE_DEVICES=$SLURM_LOCALID on a whole node), taken from what Slurm listed for the
      step, so a sub-node job gets the GPUs it was given; a list Slurm already cut to the task's
      share is kept."""
    gpus, tasks = job.gpus_per_node, job.tasks_per_node
    launcher = job.spec.launcher
    if not gpus or (launcher == "none" and job.total_tasks != 1):
        return []
    if job.pack:  # a packed element's step: the GPUs Slurm gave that step, nothing else
        return []
    var = visible_devices_env(job)
    every = ",".join(str(i) for i in range(gpus))
    if job.spec.resources.gpu_binding == "all" or launcher != "srun" or tasks == 1:
        return [f"export {var}={every}"] if job.full_node_gpus else []
    share = max(1, gpus // tasks)
    return [
        f'IFS=, read -r -a _aif_gpus <<< "${{{var}:-{every}}}"',
        f'if [ "${{#_aif_gpus[@]}}" -gt {share} ]; then '
        f'{var}="$(IFS=,; printf %s "${{_aif_gpus[*]:LOCAL_RANK*{gpus}/{tasks}:{share}}}")"; fi',
        f"export {var}",
    ]


def container_options(job: ResolvedJob) -> list[str]:
    """The container runtime's options: the GPU options when the job has GPUs (the profile's
    `container.gpu_options`; by default --nv for NVIDIA, whose driver libraries the runtime must
    bind, and none for AMD), then the profile's and the spec's options."""
    gpu_options: list[str] = []
    if job.gpus_per_node:
        configured = job.profile.container.gpu_options
        if configured is not None:
            gpu_options = list(configured)
        elif job.profile.gpu and job.profile.gpu.vendor == "nvidia":
            gpu_options = ["--nv"]
    options = [*gpu_options, *job.profile.container.options]
    options += job.spec.container.options if job.spec.container else []
    # a GPU flag given twice (the profile's default and the spec's) once; other words may repeat (-B a -B b)
    return [o for i, o in enumerate(options) if o not in _GPU_FLAGS or o not in options[:i]]


_GPU_FLAGS = {"--nv", "--nvccli", "--rocm"}


def _step_memory(job: ResolvedJob) -> str | None:
    """A packed element's step memory: its share of the node's (where the profile knows it), so that
    side-by-side steps do not each claim all of it and wait for one another."""
    if not job.pack or job.partition is None:
        return None
    node = job.profile.memory_per_node_of(job.partition)
    if not node:
        return None
    from aifactory_cli.units import format_memory

    return format_memory(node // job.pack.per_node)
