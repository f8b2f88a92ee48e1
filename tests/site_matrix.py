"""Every built-in site x the issue-13 job shapes, resolved and rendered by the real code: per cell
the key directives of the script (the site's own words, checked against its docs in the golden and
directive tests), or the reason it is refused before anything is sent.

`python3 -m tests.site_matrix` prints the table as Markdown (run from the repository root with
PYTHONPATH=src)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from aifactory_cli.errors import BadInput
from aifactory_cli.sites.profile import load_profile
from aifactory_cli.sites.render import render
from aifactory_cli.sites.resolve import Overrides, resolve
from aifactory_cli.sites.userconfig import UserConfig
from aifactory_cli.spec.model import load_spec_text

TOKEN = "0123456789abcdef0123456789abcdef"
SITES = [
    "lumi",
    "jupiter",
    "jedi",
    "juwels-booster",
    "leonardo",
    "marenostrum5",
    "meluxina",
    "karolina",
    "vega",
    "deucalion",
    "discoverer",
    "lucia",
    "local",
]
_RUN = "name: s\nrun: python3 train.py\nresources: {{{res}, time: 1h}}\n"
SHAPES = {
    "1 GPU": _RUN.format(res="gpus_per_node: 1"),
    "one full node": _RUN.format(res="gpus_per_node: all"),
    "2 nodes srun": _RUN.format(res="nodes: 2, gpus_per_node: all") + "launcher: srun\n",
    "2 nodes torchrun": _RUN.format(res="nodes: 2, gpus_per_node: all") + "launcher: torchrun\n",
    "CPU only (16 tasks)": _RUN.format(res="tasks_per_node: 16"),
    "container (1 GPU)": _RUN.format(res="gpus_per_node: 1") + "container: {image: /path/train.sif}\n",
    "1-GPU sweep (3)": _RUN.format(res="gpus_per_node: 1") + "matrix: {LR: ['1e-4', '3e-4', '1e-3']}\n",
    "1-GPU sweep packed (6)": _RUN.format(res="gpus_per_node: 1") + "matrix: {LR: [a, b, c, d, e, f]}\npack: true\n",
}


@dataclass
class Cell:
    site: str
    shape: str
    rendered: bool
    text: str  # key directives, or the refusal's message
    warnings: list[str]


def _key_directives(script: str) -> str:
    keep = ("--partition", "--qos", "--nodes", "--ntasks-per-node", "--cpus-per-task", "--gres", "--gpus", "--mem")
    d = [line.split(" ", 1)[1] for line in script.splitlines() if line.startswith("#SBATCH ")]
    picked = [x for x in d if x.startswith(keep) or x == "--exclusive" or x.startswith("--array")]
    if not d:  # the local site: no #SBATCH lines
        return "local runner"
    return " ".join(picked)


def cell(site: str, shape: str) -> Cell:
    loaded = load_profile(site)
    p = loaded.profile
    needs_qos = p.account.qos_required and not any(part.qos for part in p.partitions.values())
    ov = Overrides(account=p.account.example, qos=(p.account.example if needs_qos else None))
    try:
        job = resolve(load_spec_text(SHAPES[shape]).for_site(site), loaded, UserConfig(), ov)
        script = render(job, TOKEN, TOKEN[:8]).script
    except BadInput as exc:
        return Cell(site, shape, False, exc.message, [])
    check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    if check.returncode:
        raise AssertionError(f"{site} / {shape}: the script is not valid bash: {check.stderr}")
    text = _key_directives(script)
    if job.pack:
        text += f"; {job.pack.elements} steps, {job.pack.per_node} per node"
    if job.container_runtime:
        text += f"; {job.container_runtime} exec" + (" --nv" if f"{job.container_runtime} exec --nv" in script else "")
    return Cell(site, shape, True, text, job.warnings)


def matrix() -> list[Cell]:
    return [cell(site, shape) for site in SITES for shape in SHAPES]


def markdown(cells: list[Cell]) -> str:
    rows = ["| site | " + " | ".join(SHAPES) + " |", "|---" * (len(SHAPES) + 1) + "|"]
    for site in SITES:
        out = []
        for c in (c for c in cells if c.site == site):
            if c.rendered:
                note = f" (warns: {c.warnings[0]})" if c.warnings else ""
                out.append(f"renders: `{c.text}`{note}")
            else:
                out.append(f"**refused**: {c.text}")
        rows.append(f"| {site} | " + " | ".join(x.replace("|", "\\|") for x in out) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    import os
    import tempfile

    os.environ.setdefault("AIFACTORY_HOME", tempfile.mkdtemp(prefix="aif-matrix-"))
    print(markdown(matrix()), end="")
