"""Every built-in site profile: it loads, cites its sources, renders sample jobs that bash accepts
(golden files under tests/data/golden/sites/), and the directives it renders are the ones the
site documents (../shared/sites.md; section numbers below). Values the sources do not give stay
unknown, and a job that needs one fails with an error that names it.

Regenerate the golden files with AIF_UPDATE_GOLDEN=1 after a deliberate change (the rewritten files
fail that run), review the diff, and run again."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from aifactory_cli.errors import ConfigError, LimitError
from aifactory_cli.sites.profile import load_profile, load_profile_file
from aifactory_cli.sites.render import render
from aifactory_cli.sites.resolve import Overrides, resolve
from aifactory_cli.sites.sample import render_samples
from aifactory_cli.sites.userconfig import UserConfig
from aifactory_cli.spec.model import load_spec, load_spec_text
from tests.golden import check_golden

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "profiles"
GOLDEN = REPO / "tests" / "data" / "golden" / "sites"
TOKEN = "0123456789abcdef0123456789abcdef"
BUILTIN = sorted(p.stem for p in PROFILES.glob("*.yaml"))
GPU_SITES = [name for name in BUILTIN if load_profile_file(PROFILES / f"{name}.yaml").profile.gpu is not None]


@pytest.fixture(autouse=True)
def _home(aif_home):
    return aif_home


def _directives(script: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in script.splitlines() if line.startswith("#SBATCH ")]


def _samples(site: str) -> dict[str, str]:
    return {r["kind"]: r["script"] for r in render_samples(PROFILES / f"{site}.yaml")}


def _render(text: str, site: str) -> str:
    """`text` (a spec) rendered for `site` with the profile's example account."""
    loaded = load_profile(site)
    job = resolve(
        load_spec_text(text).for_site(site), loaded, UserConfig(), Overrides(account=loaded.profile.account.example)
    )
    return render(job, TOKEN, TOKEN[:8]).script


# --- every profile --------------------------------------------------------------------------------


def test_the_list_of_builtin_sites() -> None:
    assert set(BUILTIN) >= {
        "local",
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
        "lucia",
    }


@pytest.mark.parametrize("site", BUILTIN)
def test_profile_loads_and_cites_its_sources(site: str) -> None:
    loaded = load_profile(site)
    assert loaded.files[-1].resolve() == (PROFILES / f"{site}.yaml").resolve()
    profile = loaded.profile
    assert profile.version == 1 and profile.description
    if site != "local":
        assert profile.verified is not None, "a site profile needs a verified: date"
        assert profile.sources, "a site profile needs at least one source"
        assert all(s.title and s.url for s in profile.sources)
        assert profile.partitions


@pytest.mark.parametrize("site", BUILTIN)
def test_samples_render_and_pass_bash_n(site: str) -> None:
    samples = _samples(site)
    has_gpu = load_profile(site).profile.gpu is not None
    assert sorted(samples) == (["cpu", "gpu"] if has_gpu else ["cpu"])
    for kind, script in samples.items():
        proc = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
        assert proc.returncode == 0, f"{site} {kind}: {proc.stderr}"


@pytest.mark.parametrize("site", BUILTIN)
def test_samples_match_golden_files(site: str) -> None:
    check_golden({GOLDEN / f"{site}-{kind}.sh": script for kind, script in _samples(site).items()}, f"{site} samples")


# --- what each site documents (gpu sample: 1 node, all GPUs, 30 min) --------------------------------

GPU_SAMPLE_DIRECTIVES = {
    # 11: --qos=<project> mandatory, --gres=gpu:N (3P); partition names UNKNOWN: no --partition line
    "discoverer": {"--account=ehpc-aif-2026pg01-905", "--qos=ehpc-aif-2026pg01-905", "--gres=gpu:1"},
    # 1.3/1.4: standard-g whole nodes, --gpus-per-node=8, 7 cores per GCD
    "lumi": {
        "--partition=standard-g",
        "--account=project_465000123",
        "--gpus-per-node=8",
        "--ntasks-per-node=8",
        "--cpus-per-task=7",
    },
    # 2.4: booster, --ntasks-per-node=4 --cpus-per-task=72 --gpus-per-task=1
    "jupiter": {
        "--partition=booster",
        "--account=exalab",
        "--ntasks-per-node=4",
        "--cpus-per-task=72",
        "--gpus-per-task=1",
    },
    # 3: partition all, JUPITER node design and layout
    "jedi": {"--partition=all", "--account=exalab", "--ntasks-per-node=4", "--cpus-per-task=72", "--gpus-per-task=1"},
    # 4: booster, --gres=gpu:4, 48 cores per node = 12 per GPU
    "juwels-booster": {
        "--partition=booster",
        "--account=exalab",
        "--gres=gpu:4",
        "--ntasks-per-node=4",
        "--cpus-per-task=12",
    },
    # 5: boost_usr_prod + QoS, -A, --gres=gpu:N, 8 cores per GPU on shared nodes
    "leonardo": {
        "--partition=boost_usr_prod",
        "--qos=normal",
        "--account=AIFAC_F01_001",
        "--gres=gpu:4",
        "--ntasks-per-node=4",
        "--cpus-per-task=8",
        "--mem-per-gpu=120G",
    },
    # 6: QoS required, --gres, 20 CPUs per GPU
    "marenostrum5": {
        "--partition=acc",
        "--qos=acc_ehpc",
        "--account=ehpc191",
        "--gres=gpu:4",
        "--ntasks-per-node=4",
        "--cpus-per-task=20",
    },
    # 7: -A p20XXXX -p gpu -q default; LuxProvide's launcher: 64 CPUs for 4 GPUs
    "meluxina": {"--partition=gpu", "--qos=default", "--account=p200000", "--gpus-per-node=4", "--cpus-per-task=16"},
    # 8: qgpu, --gpus, 16 cores per GPU
    "karolina": {"--partition=qgpu", "--account=EU-25-10", "--gpus=8", "--ntasks-per-node=8", "--cpus-per-task=16"},
    # 9: partition gpu, 4 A100; a node's 256 Slurm CPUs (threads) shared by its 4 GPUs
    "vega": {"--partition=gpu", "--gpus-per-node=4", "--ntasks-per-node=4", "--cpus-per-task=64"},
    # 10: A100 partitions, account suffix g, --gpus=N with 32 CPUs per GPU
    "deucalion": {
        "--partition=normal-a100-40",
        "--account=f202500017aivlabdeucaliong",
        "--gpus=4",
        "--ntasks-per-node=4",
        "--cpus-per-task=32",
    },
    # 12: gpu partition, <= 8 cores and <= 60 GB per GPU
    "lucia": {"--partition=gpu", "--gpus-per-node=4", "--ntasks-per-node=4", "--cpus-per-task=8", "--mem-per-gpu=60G"},
}


def test_every_gpu_site_has_documented_directives() -> None:
    assert sorted(GPU_SAMPLE_DIRECTIVES) == sorted(GPU_SITES)


@pytest.mark.parametrize("site", sorted(GPU_SAMPLE_DIRECTIVES))
def test_gpu_sample_has_the_documented_directives(site: str) -> None:
    d = set(_directives(_samples(site)["gpu"]))
    assert GPU_SAMPLE_DIRECTIVES[site] <= d, sorted(d)
    # shared-node and whole-node sites alike: no --exclusive unless the spec asks for it (13.1)
    assert "--exclusive" not in d


def test_jsc_sites_export_srun_cpus_per_task() -> None:
    # 2.4/4: srun does not inherit --cpus-per-task from sbatch (Slurm >= 23.02)
    for site in ("jedi", "juwels-booster"):
        assert 'export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"' in _samples(site)["gpu"]


def test_juwels_booster_rendezvous_uses_the_infiniband_name() -> None:
    # 4: "For JUWELS Booster, MASTER_ADDR is augmented with an additional i at the end" (resolved
    # as the JSC course does; a node without such a name keeps its own)
    master = '_aif_addr="$(getent ahostsv4 "${_aif_node}i" | head -n 1)"'
    assert master in _samples("juwels-booster")["gpu"]
    torch = _render(
        "name: t\nlauncher: torchrun\nrun: train.py\nresources: {nodes: 2, gpus_per_node: all, time: 1h}\n",
        "juwels-booster",
    )
    # the JSC benchmark's one-task layout: --ntasks-per-node=1 --cpus-per-task=48 --gres=gpu:4, all GPUs visible
    assert {"--ntasks-per-node=1", "--cpus-per-task=48", "--gres=gpu:4"} <= set(_directives(torch))
    assert "export CUDA_VISIBLE_DEVICES=0,1,2,3" in torch
    assert master in torch and '--rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT"' in torch


def test_leonardo_qos_variants_are_entries_of_one_partition() -> None:
    # 5: boost_qos_dbg <= 2 nodes / 30 min, chosen on request only
    d = set(
        _directives(
            _render(
                "name: d\nrun: x\nresources: {nodes: 2, gpus_per_node: 4, time: 20m, partition: boost-dbg}\n",
                "leonardo",
            )
        )
    )
    assert {"--partition=boost_usr_prod", "--qos=boost_qos_dbg", "--gres=gpu:4"} <= d
    with pytest.raises(LimitError, match="at most 2"):
        _render(
            "name: d\nrun: x\nresources: {nodes: 3, gpus_per_node: 4, time: 20m, partition: boost-dbg}\n", "leonardo"
        )
    # over 24 h on up to 3 nodes: the automatic choice is boost_qos_lprod (4 days)
    d = set(_directives(_render("name: l\nrun: x\nresources: {nodes: 2, gpus_per_node: 1, time: 2d}\n", "leonardo")))
    assert {
        "--partition=boost_usr_prod",
        "--qos=boost_qos_lprod",
        "--gres=gpu:1",
        "--cpus-per-task=8",
        "--mem-per-gpu=120G",
    } <= d
    # bprod takes jobs of 65 nodes or more (min_nodes): a 65-node job goes there by itself,
    # and a 64-node job that names it is refused before anything is sent
    d = set(_directives(_render("name: b\nrun: x\nresources: {nodes: 65, gpus_per_node: all, time: 1h}\n", "leonardo")))
    assert {"--partition=boost_usr_prod", "--qos=boost_qos_bprod", "--nodes=65"} <= d
    assert "--qos=normal" in _directives(
        _render("name: b\nrun: x\nresources: {nodes: 64, gpus_per_node: all, time: 1h}\n", "leonardo")
    )
    with pytest.raises(LimitError, match="at least 65 nodes"):
        _render(
            "name: b\nrun: x\nresources: {nodes: 64, gpus_per_node: all, time: 1h, partition: boost-bprod}\n",
            "leonardo",
        )
    # CPU work goes to the budget-free serial partition
    assert "--partition=lrd_all_serial" in _directives(_samples("leonardo")["cpu"])


def test_leonardo_ssh_notes_mention_the_12_hour_certificate() -> None:
    notes = " ".join(load_profile("leonardo").profile.ssh.notes)
    assert "smallstep" in notes and "12 hours" in notes and "--provisioner cineca-hpc" in notes


def test_marenostrum5_keeps_20_cpus_per_gpu() -> None:
    # 6: the submit plugin enforces 20 CPUs per GPU, whatever the task layout
    for spec, gpus in [
        ("gpus_per_node: 1", 1),
        ("gpus_per_node: 2", 2),
        ("gpus_per_node: all", 4),
        ("gpus_per_node: all, tasks_per_node: 1", 4),
    ]:
        d = _directives(_render(f"name: m\nrun: x\nresources: {{{spec}, time: 1h}}\n", "marenostrum5"))
        tasks = int(next(x for x in d if x.startswith("--ntasks-per-node=")).split("=")[1])
        cpus = int(next(x for x in d if x.startswith("--cpus-per-task=")).split("=")[1])
        assert f"--gres=gpu:{gpus}" in d and tasks * cpus == 20 * gpus, d


def test_marenostrum5_needs_a_qos() -> None:
    assert load_profile("marenostrum5").profile.account.qos_required
    assert "--qos=acc_debug" in _directives(
        _render("name: m\nrun: x\nresources: {gpus_per_node: 1, time: 10m, partition: acc-debug}\n", "marenostrum5")
    )


def test_meluxina_uses_port_8822() -> None:
    ssh = load_profile("meluxina").profile.ssh
    assert (ssh.host, ssh.port) == ("login.lxp.lu", 8822)


def test_karolina_allocates_eighths_of_a_node() -> None:
    # 8: 1/8 node = 1 GPU + 16 cores in qgpu; --gpus is the job's total
    d = set(_directives(_render("name: k\nrun: x\nresources: {gpus_per_node: 1, time: 1h}\n", "karolina")))
    assert {"--partition=qgpu", "--gpus=1", "--ntasks-per-node=1", "--cpus-per-task=16"} <= d
    d = set(_directives(_render("name: k\nrun: x\nresources: {nodes: 2, gpus_per_node: all, time: 1h}\n", "karolina")))
    assert {"--nodes=2", "--gpus=16", "--ntasks-per-node=8", "--cpus-per-task=16"} <= d


def test_deucalion_gpus_and_32_cpus_per_gpu() -> None:
    # 10: --gpus=N (total) with 32 CPUs per GPU; normal-a100-* up to 4 nodes, dev-a100-* 1 node / 4 h
    d = set(_directives(_render("name: g\nrun: x\nresources: {gpus_per_node: 2, time: 1h}\n", "deucalion")))
    assert {"--partition=normal-a100-40", "--gpus=2", "--ntasks-per-node=2", "--cpus-per-task=32"} <= d
    with pytest.raises(LimitError, match="at most 4"):
        _render("name: g\nrun: x\nresources: {nodes: 5, gpus_per_node: all, time: 1h}\n", "deucalion")
    with pytest.raises(LimitError, match="over the limit of 'dev-a100-80'"):
        _render("name: g\nrun: x\nresources: {gpus_per_node: 1, time: 5h, partition: dev-a100-80}\n", "deucalion")


def test_lucia_ia_partition_has_8_gpus_per_node() -> None:
    # 12: ia = 8x A100 80 GB per node; gpu = 4x A100 40 GB
    d = set(_directives(_render("name: i\nrun: x\nresources: {gpus_per_node: 8, time: 1h}\n", "lucia")))
    assert {"--partition=ia", "--gpus-per-node=8", "--ntasks-per-node=8", "--cpus-per-task=8", "--mem-per-gpu=60G"} <= d


# --- unknowns stay unknown ---------------------------------------------------------------------------


def test_unknown_values_are_left_out() -> None:
    assert load_profile("jedi").profile.ssh.host is None  # 3: login hostname UNKNOWN
    assert load_profile("lucia").profile.ssh.host is None  # 12: SSH hostname UNKNOWN
    assert load_profile("lucia").profile.account.required is None  # 12: account flag UNKNOWN
    assert load_profile("vega").profile.account.required is None  # 9: account optional only per 3P config
    for site, part in [
        ("jedi", "all"),
        ("karolina", "qgpu"),
        ("vega", "gpu"),
        ("lucia", "gpu"),
    ]:
        p = load_profile(site).profile
        assert p.partitions[part].max_time is None and p.partitions[part].default_time is None, site
        assert p.default_time is None, site


@pytest.mark.parametrize(
    "site", ["jedi", "juwels-booster", "leonardo", "marenostrum5", "meluxina", "karolina", "vega", "deucalion", "lucia"]
)
def test_a_job_without_time_names_the_missing_default(site: str) -> None:
    # none of these sites documents a default time: the job must say how long it runs
    with pytest.raises(LimitError, match="no time limit") as info:
        _render("name: n\nrun: x\nresources: {gpus_per_node: 1}\n", site)
    assert "resources.time" in (info.value.hint or "")


def test_an_unknown_account_policy_warns_and_does_not_invent_a_flag() -> None:
    job = resolve(
        load_spec_text("name: a\nrun: x\nresources: {gpus_per_node: 1, time: 1h}\n").spec,
        load_profile("lucia"),
        UserConfig(),
        Overrides(),
    )
    assert job.account is None and any("not known" in w for w in job.warnings)
    assert not any(x.startswith("--account") for x in _directives(render(job, TOKEN, TOKEN[:8]).script))


def test_required_account_missing_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="requires a Slurm account") as info:
        resolve(
            load_spec_text("name: a\nrun: x\nresources: {gpus_per_node: 1, time: 1h}\n").spec,
            load_profile("leonardo"),
            UserConfig(),
            Overrides(),
        )
    assert "AIFAC_F01_001" in (info.value.hint or "")


def test_unknown_gpus_per_node_cannot_render_all(tmp_path: Path) -> None:
    # a site whose GPU count is unknown (as Discoverer+ is, sites.md 11): the sample GPU job asks for
    # `all`, and the error says what is missing and how to set it
    (tmp_path / "h200.yaml").write_text("extends: vega\ngpu: {per_node: null}\n")
    # the sample asks for one GPU when a whole node's count is unknown...
    gpu = next(r for r in render_samples(tmp_path / "h200.yaml") if r["kind"] == "gpu")
    assert "--gpus-per-node=1" in gpu["directives"]
    # ...and a job asking for all of them is told which value is missing and how to set it
    with pytest.raises(LimitError, match="GPUs per node of discoverer is not known") as info:
        _render("run: x\nresources: {gpus_per_node: all, time: 1h}\n", "discoverer")
    assert "gpus_per_node" in (info.value.hint or "")


# --- examples/train.yaml on every GPU site (the table in the issue note) ------------------------------

TRAIN = {
    # site: (partition [+qos], GPU flag, tasks x cpus per task)
    "lumi": ("standard-g", "--gpus-per-node=8", "8x7"),
    "jupiter": ("booster", "--gpus-per-task=1", "4x72"),
    "jedi": ("all", "--gpus-per-task=1", "4x72"),
    "juwels-booster": ("booster", "--gres=gpu:4", "4x12"),
    "leonardo": ("boost_usr_prod+normal", "--gres=gpu:4", "4x8"),
    "marenostrum5": ("acc+acc_ehpc", "--gres=gpu:4", "4x20"),
    "meluxina": ("gpu+default", "--gpus-per-node=4", "4x16"),  # LuxProvide: 64 CPUs for 4 GPUs
    "karolina": ("qgpu", "--gpus=16", "8x16"),
    "vega": ("gpu", "--gpus-per-node=4", "4x64"),  # 256 Slurm CPUs (threads) / 4 GPUs
    "deucalion": ("normal-a100-40", "--gpus=8", "4x32"),
    "lucia": ("gpu", "--gpus-per-node=4", "4x8"),
}


def train_row(site: str) -> tuple[str, str, str]:
    spec = load_spec(REPO / "examples" / "train.yaml").for_site(site)
    loaded = load_profile(site)
    job = resolve(spec, loaded, UserConfig(), Overrides(account=loaded.profile.account.example))
    d = _directives(render(job, TOKEN, TOKEN[:8]).script)
    value = {x.split("=", 1)[0]: x.split("=", 1)[1] for x in d if "=" in x}
    partition = value["--partition"] + (f"+{value['--qos']}" if "--qos" in value else "")
    gpu_flag = next(x for x in d if x.startswith(("--gpus", "--gres")))
    cpus = f"{value['--ntasks-per-node']}x{value['--cpus-per-task']}"
    return partition, gpu_flag, cpus


def test_train_table_covers_every_gpu_site() -> None:
    assert sorted([*TRAIN, "discoverer"]) == sorted(GPU_SITES)


def test_train_example_on_discoverer_names_the_unknown() -> None:
    with pytest.raises(LimitError, match="GPUs per node of discoverer is not known"):
        train_row("discoverer")


def test_discoverer_renders_no_partition_flag() -> None:
    assert not any(d.startswith("--partition") for d in _directives(_samples("discoverer")["gpu"]))


@pytest.mark.parametrize("site", sorted(TRAIN))
def test_train_example_on_every_gpu_site(site: str) -> None:
    assert train_row(site) == TRAIN[site]


# --- profile features: min_nodes, account suffix, container module, sbatch extras ----------------


def test_deucalion_account_suffix_follows_the_partition() -> None:
    gpu = "name: g\nrun: x\nresources: {gpus_per_node: 1, time: 1h}\n"
    cpu = "name: c\nrun: x\nresources: {time: 1h}\n"

    def account(text: str, given: str) -> tuple[str, list[str]]:
        job = resolve(load_spec_text(text).spec, load_profile("deucalion"), UserConfig(), Overrides(account=given))
        return job.account or "", job.warnings

    # the project id gets the partition's suffix: g on the A100 partitions, x on the x86 ones
    assert account(gpu, "f202500017aivlabdeucalion") == ("f202500017aivlabdeucaliong", [])
    assert account(cpu, "f202500017aivlabdeucalion") == ("f202500017aivlabdeucalionx", [])
    # a full GPU account is kept on GPUs, and swapped (with a warning) for an x86 job
    assert account(gpu, "f202500017aivlabdeucaliong") == ("f202500017aivlabdeucaliong", [])
    acct, warnings = account(cpu, "f202500017aivlabdeucaliong")
    assert acct == "f202500017aivlabdeucalionx"
    assert any("suffix 'x'" in w and "instead of f202500017aivlabdeucaliong" in w for w in warnings)
    assert "--account=f202500017aivlabdeucaliong" in _directives(_render(gpu, "deucalion"))


def test_karolina_qgpu_big_takes_only_big_jobs() -> None:
    with pytest.raises(LimitError, match="'qgpu_big' takes jobs of at least 17 nodes"):
        _render(
            "name: b\nrun: x\nresources: {nodes: 16, gpus_per_node: 8, time: 1h, partition: qgpu_big}\n", "karolina"
        )
    big = _render(
        "name: b\nrun: x\nresources: {nodes: 17, gpus_per_node: 8, time: 1h, partition: qgpu_big}\n", "karolina"
    )
    assert "--partition=qgpu_big" in _directives(big)


def test_marenostrum5_loads_singularity_for_container_jobs_only() -> None:
    base = "name: c\nrun: python t.py\nresources: {gpus_per_node: 1, time: 1h}\n"
    with_container = _render(base + "container: {image: /gpfs/projects/x/img.sif}\n", "marenostrum5")
    assert "module load singularity" in with_container
    assert "singularity exec" in with_container
    assert "module load singularity" not in _render(base, "marenostrum5")


def test_profile_sbatch_extras_and_the_spec_overrides_them() -> None:
    gpu = "name: j\nrun: x\nresources: {nodes: 1, gpus_per_node: all, time: 1h}\n"
    assert "--hint=nomultithread" in _directives(_render(gpu, "juwels-booster"))
    # the spec's own slurm: block wins, and null drops the site's option
    assert "--hint=multithread" in _directives(_render(gpu + "slurm: {hint: multithread}\n", "juwels-booster"))
    assert not any(
        d.startswith("--hint") for d in _directives(_render(gpu + "slurm: {hint: null}\n", "juwels-booster"))
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("slurm: {partition: x}", "slurm.partition is set by aifactory; a profile cannot override it"),
        ("slurm: {'bad key': x}", "not an sbatch long option name"),
        ("partitions: {p: {kind: cpu, min_nodes: 5, max_nodes: 2}}", "min_nodes 5 is more than max_nodes 2"),
        ("partitions: {p: {kind: cpu, account_suffix: 'x; rm'}}", "account_suffix"),
        # a typo inside a partition (a dict entry) gets the partition's keys as suggestions
        ("partitions: {p: {kind: cpu, min_node: 5}}", "unknown key 'min_node' (did you mean 'min_nodes'?)"),
    ],
)
def test_profile_feature_mistakes_are_clear_errors(tmp_path: Path, body: str, message: str) -> None:
    from aifactory_cli.errors import ProfileError

    path = tmp_path / "mine.yaml"
    text = "version: 1\nextends: lumi\n" + body + "\n"
    path.write_text(text)
    with pytest.raises(ProfileError, match=re.escape(message)) as err:
        load_profile_file(path)
    assert "mine.yaml" in str(err.value) or "mine.yaml" in str(getattr(err.value, "hint", ""))
