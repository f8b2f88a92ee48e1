"""The must-show table of issue 13: every built-in site x job shape, from the real resolve/render code
(tests/site_matrix.py; `python3 -m tests.site_matrix` prints it). Each cell either renders a script
that bash accepts, or is refused before anything is sent, for the reason expected here."""

from __future__ import annotations

import pytest

from tests import site_matrix
from tests.site_matrix import SHAPES, SITES, cell

GPU_SHAPES = [s for s in SHAPES if not s.startswith("CPU")]
UNKNOWN_RUNTIME = ["jedi", "juwels-booster", "meluxina", "karolina", "vega", "discoverer", "lucia"]

# (site, shape) -> a phrase of the refusal; every other cell must render
REFUSED = {
    **{
        (site, "container (1 GPU)"): "container runtime (Apptainer/Singularity) is not known"
        for site in UNKNOWN_RUNTIME
    },
    **{
        ("discoverer", shape): "GPUs per node of discoverer is not known"
        for shape in ("one full node", "2 nodes srun", "2 nodes torchrun")
    },
    ("discoverer", "1-GPU sweep packed (6)"): "GPUs per node are unknown",
    # the local site runs no GPU job today (the launch work gives it the machine's GPUs)
    **{("local", shape): "the local site has no GPUs" for shape in GPU_SHAPES},
}

CPU_PARTITION = {
    "lumi": "small",
    "jupiter": "booster",
    "jedi": "all",
    "juwels-booster": "booster",
    "leonardo": "dcgp_usr_prod",  # was refused: only the 4-core serial partition was known
    "marenostrum5": "gpp",  # was acc, the GPU partition
    "meluxina": "cpu",
    "karolina": "qcpu",
    "vega": "cpu",
    "deucalion": "normal-x86",
    "lucia": "batch",
}


@pytest.fixture(autouse=True)
def _home(aif_home):
    return aif_home


@pytest.fixture
def cells(aif_home) -> dict[tuple[str, str], site_matrix.Cell]:
    return {(c.site, c.shape): c for c in site_matrix.matrix()}


def test_the_table_has_all_12_sites_and_the_local_one() -> None:
    assert len(SITES) == 13 and len(SHAPES) == 8


@pytest.mark.parametrize(("site", "shape"), [(s, sh) for s in SITES for sh in SHAPES])
def test_each_cell_renders_or_is_refused_for_the_expected_reason(site: str, shape: str) -> None:
    c = cell(site, shape)
    if (site, shape) in REFUSED:
        assert not c.rendered and REFUSED[(site, shape)] in c.text, c.text
    else:
        assert c.rendered, f"{site} / {shape} refused: {c.text}"


@pytest.mark.parametrize("site", sorted(CPU_PARTITION))
def test_cpu_jobs_go_to_a_cpu_partition(site: str) -> None:
    c = cell(site, "CPU only (16 tasks)")
    assert f"--partition={CPU_PARTITION[site]} " in c.text, c.text


def test_no_rendered_gpu_cell_gets_one_cpu_per_task(cells) -> None:
    one = [k for k, c in cells.items() if c.rendered and k[1] in GPU_SHAPES and "--cpus-per-task=1 " in c.text + " "]
    assert one == []


def test_whole_node_sites_warn_that_a_1_gpu_sweep_bills_whole_nodes_unless_packed(cells) -> None:
    # as an array, every element takes (and bills) a node: the user is told what it costs; packed
    # (pack: true), the 6 elements are steps of one job on 2 nodes, no warning
    for site in ("jupiter", "jedi", "juwels-booster"):
        c = cells[(site, "1-GPU sweep (3)")]
        assert c.rendered and "--array=0-2" in c.text
        assert any("allocates whole nodes" in w for w in c.warnings)
        packed = cells[(site, "1-GPU sweep packed (6)")]
        assert packed.rendered and "--nodes=2 " in packed.text and "--array" not in packed.text, packed.text
        assert "6 steps, 4 per node" in packed.text and not any("whole nodes" in w for w in packed.warnings)


def test_the_markdown_has_a_row_per_site(cells) -> None:
    text = site_matrix.markdown(list(cells.values()))
    lines = text.splitlines()
    assert len(lines) == 2 + len(SITES)
    assert all(line.count(" | ") == len(SHAPES) for line in lines[2:])
