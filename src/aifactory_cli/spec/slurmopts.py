"""sbatch options a `slurm:` block may pass (a spec's or a profile's), and the merge of a profile or a
spec override onto its base. Apart from `spec.model` so that reading a site profile does not build
the job spec's models (`sites.profile` needs only these: about 50 ms of every command's start)."""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from typing import Any

SLURM_OPT_RE = re.compile(r"^[a-z][a-z0-9-]*$")

_SBATCH_DIRECTIVE_RE = re.compile(r"#SBATCH[ \t]+--([a-z][a-z0-9-]*)")
# sbatch options that no template writes but that would still fight with what aifactory sets
_ALSO_PROTECTED = {
    "ntasks": "the task count is nodes x tasks_per_node",
    "mem-per-cpu": "sbatch refuses it beside --mem / --mem-per-gpu",
    "chdir": "the job runs in its job directory, where its outputs and exit code are found",
    "wrap": "the job is the rendered script",
    "export": "the job's environment comes from env: and the site's modules",
}


# options aifactory sets but merges with the user's value instead of refusing it (the comment keeps
# aifactory's token first: sites.resolve.ResolvedJob.comment_for)
MERGED_SLURM_OPTIONS = frozenset({"comment"})


@lru_cache(maxsize=1)
def protected_slurm_options() -> frozenset[str]:
    """sbatch options that aifactory sets itself, which a `slurm:` passthrough may not override:
    every `#SBATCH --name` the templates write (so a directive added to a template is protected
    with no second list to keep in step), the options of the sbatch command line, and the few
    above. Read only when a spec or profile has a `slurm:` block."""
    from aifactory_cli import paths
    from aifactory_cli.scheduler.slurm import sbatch_command

    names = set(_ALSO_PROTECTED)
    for template in sorted(paths.templates_dir().glob("*.sh.j2")):
        names.update(_SBATCH_DIRECTIVE_RE.findall(template.read_text(encoding="utf-8")))
    for command in (sbatch_command(None), sbatch_command(None, test_only=True)):
        names.update(arg[2:] for arg in command if arg.startswith("--"))
    return frozenset(names)


def check_slurm_options(v: Any, instead: str) -> Any:
    """A `slurm:` block (spec or profile): extra sbatch long options, none that aifactory sets itself.
    A value of true gives `--name`; null or false leaves the option out (and drops an inherited one)."""
    if isinstance(v, dict):
        protected = protected_slurm_options() if v else frozenset()
        for key, value in v.items():
            key = str(key).lstrip("-")
            if not SLURM_OPT_RE.match(key):
                raise ValueError(f"slurm option '{key}' is not an sbatch long option name")
            if key in protected and key not in MERGED_SLURM_OPTIONS:
                raise ValueError(f"slurm.{key} is set by aifactory; {instead}")
            # sbatch takes any unique prefix of a long option (--parti = --partition); a prefix of
            # several (--p) is refused by sbatch, or read as one of them
            full = sorted(o for o in protected if o.startswith(key) and key not in MERGED_SLURM_OPTIONS)
            if len(full) == 1:
                raise ValueError(
                    f"slurm.{key} is an abbreviation sbatch would read as --{full[0]}, which aifactory sets; {instead}"
                )
            if full:
                raise ValueError(
                    f"slurm.{key} is an abbreviation of --{', --'.join(full)}, which aifactory sets; {instead}"
                )
            if isinstance(value, str) and ("\n" in value or "\r" in value):
                raise ValueError(f"slurm.{key} must be a single line")
        return {str(k).lstrip("-"): val for k, val in v.items()}
    return v


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`: mappings merge key by key, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
