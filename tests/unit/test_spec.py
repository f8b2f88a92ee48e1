from pathlib import Path

import pytest

from aifactory_cli.errors import SpecError
from aifactory_cli.spec.model import MERGED_SLURM_OPTIONS, load_spec, load_spec_text, protected_slurm_options

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


# Jobs that between them take every branch of the templates' directives block: a whole-node GPU job,
# GPU jobs with fewer tasks than GPUs and with one task per GPU, and a CPU sweep with memory, limits
# and --exclusive. Each is also given a dependency, the only way to get --dependency lines.
_ALL_FEATURES = [
    "run: x\nresources: {gpus_per_node: all, time: 10m}\n",
    "run: x\nresources: {gpus_per_node: 2, tasks_per_node: 1, time: 10m}\n",
    "run: x\nresources: {gpus_per_node: 2, tasks_per_node: 2, time: 10m}\n",
    "run: x\nresources: {gpus_per_node: 1, memory: 8G, time: 10m, exclusive: true}\n",
    "run: x\nresources: {memory: 1G, time: 10m, exclusive: true}\nmatrix: {A: [1, 2, 3]}\nmax_parallel: 2\n",
    "run: x\nresources: {nodes: 2, time: 10m}\n",
]


def _options_builtin_profiles_render() -> set[str]:
    """The `#SBATCH --name` options that some built-in profile's rendered script sets itself
    (everything but the profile's own `slurm:` passthrough, which a spec may override)."""
    from aifactory_cli import paths
    from aifactory_cli.errors import AifactoryError
    from aifactory_cli.sites.profile import load_profile_file
    from aifactory_cli.sites.render import render
    from aifactory_cli.sites.resolve import Overrides, resolve
    from aifactory_cli.sites.userconfig import UserConfig

    found: set[str] = set()
    for file in sorted(paths.builtin_profiles_dir().glob("*.yaml")):
        loaded = load_profile_file(file)
        overrides = Overrides(account=loaded.profile.account.example or "acct", qos="someqos")
        for text in _ALL_FEATURES:
            for partition in [None, *loaded.profile.partitions]:
                spec = load_spec_text(text).for_site(loaded.profile.name)
                if partition is not None:
                    spec = spec.model_copy(
                        update={"resources": spec.resources.model_copy(update={"partition": partition})}
                    )
                try:
                    job = resolve(spec, loaded, UserConfig(), overrides)
                except AifactoryError:  # a job this partition cannot run
                    continue
                job.dependencies = ["1234"]
                script = render(job, "0" * 32, "0" * 8).script
                passthrough = {f"--{k}" for k in job.slurm_options}
                for line in script.splitlines():
                    if line.startswith("#SBATCH --"):
                        opt = line.split()[1].split("=", 1)[0]
                        if opt not in passthrough:
                            found.add(opt[2:])
    return found


def test_every_option_a_builtin_profile_renders_is_refused_in_slurm(aif_home: Path) -> None:
    """A `slurm:` entry for an option aifactory writes itself would give two contradictory
    #SBATCH lines (sbatch takes the last): each one is refused, with the key named."""
    rendered = _options_builtin_profiles_render()
    # the jobs above reach the branches they are meant to (else this test would prove little)
    assert {"qos", "kill-on-invalid-dep", "dependency", "array", "exclusive", "mem", "mem-per-gpu"} <= rendered
    assert {"gres", "gpus-per-node", "gpus-per-task", "partition", "account"} <= rendered
    accepted = []
    for option in sorted(rendered - MERGED_SLURM_OPTIONS):  # comment: merged with the token (test_site_fixes)
        try:
            load_spec_text(f"run: x\nslurm: {{{option}: x}}\n", source="job.yaml")
        except SpecError as exc:
            assert f"slurm.{option} is set by aifactory" in str(exc), str(exc)
        else:
            accepted.append(option)
    assert accepted == [], f"slurm: accepts options that aifactory's templates set: {accepted}"


def test_a_directive_added_to_a_template_is_protected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The protected options are read from the templates: a new `#SBATCH --x` in any of them is
    refused in `slurm:` with no other change."""
    from aifactory_cli import paths

    load_spec_text("run: x\nslurm: {mail-type: END}\n")  # not set by aifactory today
    (tmp_path / "base.sh.j2").write_text((paths.templates_dir() / "base.sh.j2").read_text())
    (tmp_path / "mysite.sh.j2").write_text(
        '{% extends "base.sh.j2" %}\n{% block directives %}\n{{ super() }}#SBATCH --mail-type=END\n{% endblock %}\n'
    )
    monkeypatch.setattr(paths, "templates_dir", lambda: tmp_path)
    protected_slurm_options.cache_clear()
    try:
        with pytest.raises(SpecError, match=r"slurm\.mail-type is set by aifactory"):
            load_spec_text("run: x\nslurm: {mail-type: END}\n")
        assert {"qos", "kill-on-invalid-dep", "parsable", "test-only", "chdir"} <= protected_slurm_options()
    finally:
        protected_slurm_options.cache_clear()


@pytest.mark.parametrize(
    ("key", "needle"),
    [("parti", "would read as --partition"), ("p", "abbreviation of --parsable, --partition"), ("n", "--nodes")],
)
def test_abbreviations_of_protected_options_are_refused(key: str, needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        load_spec_text(f"run: x\nslurm: {{{key}: x}}\n")
