from pathlib import Path

import pytest

from aifactory_cli.errors import SpecError
from aifactory_cli.spec.model import PROTECTED_SLURM_OPTIONS, load_spec, load_spec_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_examples_load() -> None:
    hello = load_spec(EXAMPLES / "hello.yaml").spec
    assert hello.name == "hello" and hello.resources.gpus_per_node == 0
    train = load_spec(EXAMPLES / "train.yaml").spec
    assert train.resources.nodes == 2 and train.resources.gpus_per_node == "all"
    assert train.upload == ["train.py"]


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    f = tmp_path / "my job.yaml"
    f.write_text("run: echo hi\n")
    assert load_spec(f).spec.name == "my-job"


def test_full_contract_example_validates() -> None:
    text = """
name: llama-ft
resources: {nodes: 1, gpus_per_node: 8, tasks_per_node: 8, cpus_per_task: 7, memory: 60G,
            time: "02:00:00", partition: small-g, exclusive: false}
container: {image: "docker://rocm/pytorch:latest", bind: [/scratch/project_465000123]}
modules: [PyTorch]
env: {HF_HOME: /scratch/project_465000123/hf, SEED: 7}
setup: echo preparing
run: python train.py --lr "$LR"
launcher: srun
upload: [train.py, data/]
download: ["outputs/**"]
matrix: {LR: ["1e-4", 3e-4]}
depends_on: []
sites:
  lumi: {modules: [LUMI/24.03, partition/G]}
slurm: {constraint: mi250}
"""
    loaded = load_spec_text(text)
    spec = loaded.spec
    assert spec.env["SEED"] == "7"
    assert spec.matrix["LR"] == ["1e-4", "3e-4"]  # the text as written, quoted or not
    assert spec.array_size == 2
    assert loaded.for_site("lumi").modules == ["LUMI/24.03", "partition/G"]
    assert loaded.for_site("jupiter").modules == ["PyTorch"]


def test_matrix_is_a_cartesian_product() -> None:
    spec = load_spec_text("run: x\nmatrix: {A: [1, 2], B: [x, y, z]}\n").spec
    assert spec.array_size == 6
    assert spec.matrix_elements()[0] == {"A": "1", "B": "x"}
    assert spec.matrix_elements()[-1] == {"A": "2", "B": "z"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("run: x\nresources: {gpus_pernode: 2}\n", "did you mean 'gpus_per_node'"),
        ("run: x\nmodlues: [a]\n", "did you mean 'modules'"),
        ("run: x\nresources: {time: 2 hours}\n", "is not a time"),
        ("run: x\nresources: {memory: lots}\n", "not a memory size"),
        ("run: x\nresources: {gpus_per_node: some}\n", "a number or 'all'"),
        ("run: x\nname: 'a b'\n", "not a valid name"),
        ("run: ''\n", "run must not be empty"),
        ("name: x\n", "run: required key is missing"),
        ("run: x\nenv: {'A-B': 1}\n", "not a valid environment variable name"),
        ("run: x\nmatrix: {LR: []}\n", "non-empty list"),
        ("run: x\nupload: [../secret]\n", "without '..'"),
        ("run: x\nslurm: {partition: foo}\n", "set by aifactory"),
        ('run: x\nslurm: {constraint: "a\\nb"}\n', "single line"),
        ("run: x\nlauncher: mpirun\n", "srun"),
        ("run: x\nsites: {lumi: {resources: {nodez: 2}}}\n", "did you mean 'nodes'"),
        ("- a\n- b\n", "must be a YAML mapping"),
        ("run: x\nlauncher: torchrun\nresources: {tasks_per_node: 4}\n", "one task per node"),
    ],
)
def test_bad_specs_name_the_problem(text: str, needle: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, source="job.yaml")
    assert needle in str(info.value)
    assert "job.yaml" in str(info.value)


def test_error_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "job.yaml"
    f.write_text("name: x\nresources:\n  nodes: 1\n  gpus_pernode: 2\nrun: x\n")
    with pytest.raises(SpecError) as info:
        load_spec(f)
    assert info.value.where == f"{f}:4"


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "job.yaml"
    f.write_text("name: x\nresources:\n  nodes: 1\n time: 5m\nrun: x\n")
    with pytest.raises(SpecError) as info:
        load_spec(f)
    assert info.value.where == f"{f}:4"
    assert "malformed YAML" in info.value.message


def test_protected_options_cover_what_we_render() -> None:
    for opt in ("partition", "account", "nodes", "array", "dependency", "comment", "output", "time"):
        assert opt in PROTECTED_SLURM_OPTIONS
