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


def render(job: ResolvedJob, token: str, job_id: str) -> Rendered:
    import jinja2

    name = job.profile.template_name
    try:
        template = _environment().get_template(f"{name}.sh.j2")
    except jinja2.TemplateNotFound as exc:
        raise ProfileError(
            f"site '{job.site}' names template '{name}', but templates/slurm/{name}.sh.j2 does not exist",
            "fix `template:` in the profile (or leave it out for the base template)",
        ) from exc
    elements = job.spec.matrix_elements()
    context = {
        "job": job,
        "spec": job.spec,
        "profile": job.profile,
        "token": token,
        "job_id": job_id,
        "elements": elements,
        "dependencies": job.dependencies,
        "extra_slurm": _extra_slurm(job.slurm_options),
        "jobdir": jobdir.template_names(),
    }
    try:
        script = template.render(**context)
    except jinja2.UndefinedError as exc:
        raise ProfileError(f"template '{name}' uses an undefined value: {exc.message}") from exc
    return Rendered(script=script, template=name, template_digest=template_digest(name))


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
