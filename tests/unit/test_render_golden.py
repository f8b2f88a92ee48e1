"""Golden-file tests of rendered scripts. The golden files were reviewed line by line against
../shared/sites.md (LUMI section 1.4/1.5/1.6, JUPITER section 2.4). Regenerate with
AIF_UPDATE_GOLDEN=1 after a deliberate change (the rewritten files fail that run), review the diff,
and run again."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from aifactory_cli.sites.profile import load_profile, load_profile_file
from aifactory_cli.sites.render import render
from aifactory_cli.sites.resolve import Overrides, resolve
from aifactory_cli.sites.userconfig import UserConfig
from aifactory_cli.spec.model import load_spec, load_spec_text
from tests.golden import check_golden

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "data" / "golden"
BED = REPO / "tests" / "profiles" / "bed"  # lumi-chain: lumi-bed with requeue: false
TOKEN = "0123456789abcdef0123456789abcdef"

CASES = {
    "lumi-train": ("examples/train.yaml", "lumi", "project_465000123"),
    "jupiter-train": ("examples/train.yaml", "jupiter", "exalab"),
    "local-hello": ("examples/hello.yaml", "local", None),
    "lumi-small-g-1gpu": (
        "run: python3 infer.py\nname: infer\nresources: {gpus_per_node: 1, time: 2h}\n",
        "lumi",
        "project_465000123",
    ),
    "lumi-cpu": (
        "run: ./simulate\nname: sim\nresources: {nodes: 2, tasks_per_node: 128, time: 1d}\n",
        "lumi",
        "project_465000123",
    ),
    "jupiter-torchrun": (
        "run: train.py --epochs 3\nname: ddp\nlauncher: torchrun\n"
        "resources: {nodes: 4, gpus_per_node: all, time: 6h}\n",
        "jupiter",
        "exalab",
    ),
    "lumi-sweep-container": (
        'name: sweep\nrun: python3 bench.py --lr "$LR"\nresources: {gpus_per_node: 8, time: 1h}\n'
        "container: {image: /appl/local/containers/pytorch.sif, bind: [/scratch/project_465000123]}\n"
        "matrix: {LR: ['1e-4', '3e-4', '1e-3']}\nmax_parallel: 2\n",
        "lumi",
        "project_465000123",
    ),
    # a week on standard-g as segments of the partition's 2 days (requeue), torchrun in a container
    "lumi-segments-torchrun-container": (
        "name: long\nrun: train.py --resume\nlauncher: torchrun\nretries: 3\n"
        "resources: {nodes: 2, gpus_per_node: all, time: 7d}\ncheckpoint: {grace: 10m}\n"
        "container: {image: /appl/local/containers/pytorch.sif}\n",
        "lumi",
        "project_465000123",
    ),
    # a site without requeue: each segment a job depending on the one before; retries 0, USR2
    "lumi-segments-chain": (
        "name: long\nrun: exec python3 train.py\nresources: {time: 3h}\n"
        "checkpoint: {segment: 1h, grace: 90s, signal: USR2}\n",
        "lumi-chain",
        "project_465000123",
    ),
}

# The launch contract on the six sites the issue names (README, "The launch contract"): 2 nodes
# with srun, 2 nodes with torchrun, a container, and LUMI's MPI-style per-task GCD binding.
LAUNCH_SITES = {
    "lumi": "project_465000123",
    "jupiter": "exalab",
    "juwels-booster": "exalab",
    "leonardo": "EUHPC_A05_043",
    "marenostrum5": "ehpc191",
    "meluxina": "p200000",
}
LAUNCH_SHAPES = {
    "srun2": "name: ddp\nrun: python3 train.py\nresources: {nodes: 2, gpus_per_node: all, time: 1h}\n",
    "torchrun2": "name: ddp\nrun: train.py\nlauncher: torchrun\nresources: {nodes: 2, gpus_per_node: all, time: 1h}\n",
    "container": (
        "name: ctr\nrun: python3 train.py\nresources: {gpus_per_node: all, time: 1h}\n"
        "container: {image: /images/pytorch.sif, bind: [/data/x]}\n"
    ),
}
NO_RUNTIME = {"juwels-booster", "meluxina"}  # their profiles name no container runtime (yet)
for _site, _account in LAUNCH_SITES.items():
    for _shape, _text in LAUNCH_SHAPES.items():
        if not (_shape == "container" and _site in NO_RUNTIME):
            CASES[f"launch-{_site}-{_shape}"] = (_text, _site, _account)
CASES["launch-lumi-srun2-per-task"] = (
    "name: mpi\nrun: ./solver\nresources: {nodes: 2, gpus_per_node: all, time: 1h, gpu_binding: per_task}\n",
    "lumi",
    "project_465000123",
)


def _render(name: str) -> str:
    source, site, account = CASES[name]
    loaded = load_spec(REPO / source) if source.endswith(".yaml") else load_spec_text(source)
    profile = load_profile_file(BED / "lumi-chain.yaml") if site == "lumi-chain" else load_profile(site)
    job = resolve(loaded.for_site(site), profile, UserConfig(), Overrides(account=account))
    return render(job, TOKEN, TOKEN[:8]).script


@pytest.fixture(autouse=True)
def _home(aif_home):
    return aif_home


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    check_golden({GOLDEN / f"{name}.sh": _render(name)}, f"rendered {name}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_scripts_are_valid_bash(name: str) -> None:
    proc = subprocess.run(["bash", "-n"], input=_render(name), text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr


def _directives(script: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_lumi_full_node_follows_the_lumi_docs() -> None:
    script = _render("lumi-train")
    d = _directives(script)
    # partition and account are both mandatory on LUMI (201-Slurm.md)
    assert "--partition=standard-g" in d and "--account=project_465000123" in d
    # full-node GPU request as in the docs' standard-g examples, one task per GCD, 7 cores per GCD
    assert {"--nodes=2", "--gpus-per-node=8", "--ntasks-per-node=8", "--cpus-per-task=7"} <= set(d)
    # the documented 7-core hybrid masks (distribution-binding.md), in both GPU bindings
    masks = "CPU_BIND=mask_cpu:fe000000000000,fe00000000000000,fe0000,fe000000,fe,fe00,fe00000000,fe0000000000"
    per_task = _render("launch-lumi-srun2-per-task")
    for text in (script, per_task):
        assert masks in text and (
            'srun --nodes=2 --ntasks=16 --cpus-per-task=7 --kill-on-bad-exit=1 --cpu-bind="$CPU_BIND" bash -c' in text
        )
        assert "select_gpu" not in text  # no wrapper file is written into the job dir
    # gpu_binding all (default): every task sees the node's 8 GCDs (the AI Guide's PyTorch recipe);
    # per_task: task i sees GCD i, what the docs' select_gpu wrapper does (ROCR_VISIBLE_DEVICES)
    assert "export ROCR_VISIBLE_DEVICES=0,1,2,3,4,5,6,7" in script
    assert 'ROCR_VISIBLE_DEVICES="$(IFS=,; printf %s "${_aif_gpus[*]:LOCAL_RANK*8/8:1}")"' in per_task
    # a versioned stack with the GPU partition module, inside the script
    assert "module load LUMI/25.03 partition/G" in script


def test_lumi_sub_node_follows_the_ai_guide_recipe() -> None:
    d = _directives(_render("lumi-small-g-1gpu"))
    assert {
        "--partition=small-g",
        "--gpus-per-node=1",
        "--ntasks-per-node=1",
        "--cpus-per-task=7",
        "--mem-per-gpu=60G",
    } <= set(d)
    assert "select_gpu" not in _render("lumi-small-g-1gpu")


def test_jupiter_follows_the_jsc_docs() -> None:
    script = _render("jupiter-train")
    d = _directives(script)
    assert {
        "--partition=booster",
        "--account=exalab",
        "--ntasks-per-node=4",
        "--cpus-per-task=72",
        "--gpus-per-task=1",
    } <= set(d)
    assert 'export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"' in script
    torch = _render("jupiter-torchrun")
    assert "export CUDA_VISIBLE_DEVICES=0,1,2,3" in torch
    assert "--gres=gpu:4" in _directives(torch)


def test_sweep_is_one_array_with_a_limit() -> None:
    script = _render("lumi-sweep-container")
    assert "--array=0-2%2" in _directives(script)
    assert "  1) export LR=3e-4; ;;" in script
    assert (
        'singularity exec --bind "$AIF_BINDS" --bind /scratch/project_465000123 /appl/local/containers/pytorch.sif'
        in script
    )


def test_every_user_value_is_quoted() -> None:
    text = (
        'name: q\nrun: echo "$(touch /tmp/pwned)"; `id`\nsetup: "echo \'; rm -rf /\'"\n'
        'env: {A: "$(touch /tmp/pwned) \'\\""}\nmatrix: {B: ["a b", "$(id)"]}\n'
    )
    job = resolve(load_spec_text(text).spec, load_profile("local"), UserConfig(), Overrides())
    script = render(job, TOKEN, TOKEN[:8]).script
    assert "export A='$(touch /tmp/pwned) '\"'\"'\"'" in script
    assert "export B='$(id)'" in script
    proc = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert proc.returncode == 0


def test_an_update_run_never_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AIF_UPDATE_GOLDEN=1 rewrites the golden files; a test that then compared the file it had just
    written would always pass. In update mode a rewritten file fails (review the diff, run again)
    and an unchanged one is skipped: an update run is never green."""
    import sys

    name = "local-hello"
    monkeypatch.setattr(sys.modules[__name__], "GOLDEN", tmp_path)
    golden = tmp_path / f"{name}.sh"
    golden.write_text("#!/bin/bash\nstale\n")
    monkeypatch.setenv("AIF_UPDATE_GOLDEN", "1")
    with pytest.raises(pytest.fail.Exception, match="rewrote"):
        test_golden(name)
    assert golden.read_text() == _render(name)
    with pytest.raises(pytest.skip.Exception, match="unchanged"):
        test_golden(name)
    monkeypatch.delenv("AIF_UPDATE_GOLDEN")
    test_golden(name)  # and a normal run checks the file it wrote
