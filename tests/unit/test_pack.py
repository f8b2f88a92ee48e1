"""`pack: true`: a sweep as job steps side by side on whole nodes of one job (sites/pack.py), as
rendered for JUPITER and LUMI, refused where it cannot work, ignored on the local site."""

from __future__ import annotations

import subprocess

import pytest

from aifactory_cli.errors import LimitError, SpecError
from aifactory_cli.sites.billing import estimate
from aifactory_cli.sites.profile import load_profile
from aifactory_cli.sites.render import render
from aifactory_cli.sites.resolve import Overrides, resolve
from aifactory_cli.sites.userconfig import UserConfig
from aifactory_cli.spec.model import load_spec_text

ACCOUNTS = {"jupiter": "exalab", "lumi": "project_465000123"}


def _resolve(text: str, site: str = "jupiter"):
    spec = load_spec_text(text).for_site(site)
    return resolve(spec, load_profile(site), UserConfig(), Overrides(account=ACCOUNTS.get(site)))


SWEEP = (
    "name: s\nresources: {{gpus_per_node: {g}, time: 1h}}\nmatrix: {{LR: [{values}]}}\npack: true\nrun: python3 t.py\n"
)


def _sweep(n: int, g: int = 1, extra: str = "") -> str:
    return SWEEP.format(g=g, values=", ".join(f'"{i}"' for i in range(n))) + extra


def test_jupiter_six_one_gpu_elements_take_two_nodes_as_steps() -> None:
    job = _resolve(_sweep(6))
    assert job.pack is not None
    assert (job.pack.per_node, job.pack.nodes, job.nodes, job.gpus_per_node, job.tasks_per_node) == (4, 2, 2, 4, 4)
    script = render(job, "0" * 32, "00000000").script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert "#SBATCH --array" not in script and "#SBATCH --nodes=2" in script and "#SBATCH --gres=gpu:4" in script
    assert "srun --nodes=1 --ntasks=1 --cpus-per-task=72 --exclusive --gres=gpu:1" in script
    assert "for _aif_i in $(seq 0 5); do" in script
    assert 'export MASTER_ADDR="$_aif_addr"' in script  # each element's rendezvous: its own node
    assert "CUDA_VISIBLE_DEVICES=0,1,2,3" not in script  # the step's GPU, not the node's
    charge = estimate(job)
    assert charge is not None and "2 nodes" in charge.how and "array" not in charge.how


def test_max_parallel_sizes_the_job_and_the_rest_queue_as_steps() -> None:
    job = _resolve(_sweep(10, extra="max_parallel: 4\n"))
    assert job.pack is not None and (job.nodes, job.pack.running_at_once) == (1, 4)


def test_two_gpu_elements_pack_two_per_node_and_torchrun_gets_its_gpus() -> None:
    job = _resolve(_sweep(4, g=2, extra="launcher: torchrun\n").replace("run: python3 t.py", "run: t.py"))
    assert job.pack is not None and (job.pack.per_node, job.nodes) == (2, 2)
    script = render(job, "0" * 32, "00000000").script
    assert "torchrun --nnodes=1 --nproc-per-node=2" in script


def test_lumi_standard_g_packs_eight_gcds_per_node() -> None:
    job = _resolve(_sweep(16, extra="sites: {lumi: {resources: {partition: standard-g}}}\n"), "lumi")
    assert job.pack is not None and (job.pack.per_node, job.nodes) == (8, 2)


@pytest.mark.parametrize(
    ("text", "error", "words"),
    [
        (_sweep(4).replace('matrix: {LR: ["0", "1", "2", "3"]}\n', ""), SpecError, "has no matrix"),
        (_sweep(4, extra="launcher: none\n"), SpecError, "launcher: none"),
        (_sweep(4).replace("gpus_per_node: 1,", "nodes: 2, gpus_per_node: 1,"), LimitError, "asks for 2 nodes"),
        (_sweep(4, g=4), LimitError, "only one fits on a node"),
        (_sweep(4).replace("gpus_per_node: 1,", "gpus_per_node: 0,"), LimitError, "ask for no GPUs"),
    ],
)
def test_refusals_say_why(text: str, error: type[Exception], words: str) -> None:
    with pytest.raises(error) as exc:
        _resolve(text)
    assert words in str(exc.value)


def test_the_local_site_runs_the_sweep_as_it_always_does() -> None:
    job = _resolve(_sweep(3).replace("gpus_per_node: 1, ", ""), "local")
    assert job.pack is None and job.array_size == 3
