"""The site fixes of issue 13 ("Site shapes still wrong", "Site environment nobody renders"): each test
names the source recorded in the profile, and each failed on the code before the fix."""

from __future__ import annotations

import pytest

from aifactory_cli.backends.slurm import SlurmBackend
from aifactory_cli.errors import ConfigError, LimitError, ProfileError, SpecError
from aifactory_cli.jobs.model import Job
from aifactory_cli.scheduler.slurm import token_of
from aifactory_cli.sites.profile import load_profile, load_profile_file
from aifactory_cli.sites.render import render
from aifactory_cli.sites.resolve import Overrides, ResolvedJob, resolve
from aifactory_cli.sites.userconfig import UserConfig
from aifactory_cli.spec.model import load_spec_text
from aifactory_cli.transport.local import LocalTransport

TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True)
def _home(aif_home):
    return aif_home


def _resolve(text: str, site: str, **overrides: str) -> ResolvedJob:
    loaded = load_profile(site)
    ov = Overrides(account=loaded.profile.account.example, **overrides)
    return resolve(load_spec_text(text).for_site(site), loaded, UserConfig(), ov)


def _directives(text: str, site: str, **overrides: str) -> set[str]:
    script = render(_resolve(text, site, **overrides), TOKEN, TOKEN[:8]).script
    return {line.split(" ", 1)[1] for line in script.splitlines() if line.startswith("#SBATCH ")}


GPU4 = "name: g\nrun: x\nresources: {gpus_per_node: all, time: 1h}\n"


# --- CPU-per-GPU ratios (were --cpus-per-task=1) ---------------------------------------------------


@pytest.mark.parametrize(
    ("site", "layout", "torchrun_cpus"),
    [
        # LuxProvide's launcher: --ntasks=1 --cpus-per-task=64 for 4 GPUs (OFF-T)
        ("meluxina", {"--ntasks-per-node=4", "--cpus-per-task=16"}, "--cpus-per-task=64"),
        # Vega: 256 Slurm CPUs (hardware threads, /shares/ OFF) per 4 GPUs (DERIVED)
        ("vega", {"--ntasks-per-node=4", "--cpus-per-task=64"}, "--cpus-per-task=256"),
    ],
)
def test_gpu_jobs_get_the_documented_cpu_share(site: str, layout: set[str], torchrun_cpus: str) -> None:
    assert layout <= _directives(GPU4, site)
    # torchrun: one task per node that starts a worker per GPU, with the node's whole CPU share
    torch = _directives(GPU4 + "launcher: torchrun\n", site)
    assert {"--ntasks-per-node=1", torchrun_cpus} <= torch


def test_discoverer_gpu_gets_its_billing_share_and_16_gpus_are_refused() -> None:
    # ~26 threads per GPU fair share (3P); the GPU count per node is unknown, but no H200 board has 16
    assert {"--gres=gpu:2", "--ntasks-per-node=2", "--cpus-per-task=26"} <= _directives(
        "name: d\nrun: x\nresources: {gpus_per_node: 2, time: 1h}\n", "discoverer", qos="p1"
    )
    with pytest.raises(LimitError, match="no H200 node has more than 8"):
        _resolve("name: d\nrun: x\nresources: {gpus_per_node: 16, time: 1h}\n", "discoverer", qos="p1")
    assert "--gres=gpu:8" in _directives(
        "name: d\nrun: x\nresources: {gpus_per_node: 8, time: 1h}\n", "discoverer", qos="p1"
    )


# --- MareNostrum 5: gpp for CPU jobs, 72 h on acc_ehpc (3P) ------------------------------------------


def test_marenostrum5_cpu_jobs_go_to_gpp_with_gp_ehpc() -> None:
    d = _directives("name: c\nrun: x\nresources: {nodes: 2, tasks_per_node: 112, time: 1d}\n", "marenostrum5")
    assert {"--partition=gpp", "--qos=gp_ehpc", "--nodes=2", "--ntasks-per-node=112"} <= d
    with pytest.raises(LimitError, match="112 usable cores"):
        _resolve("name: c\nrun: x\nresources: {tasks_per_node: 113, time: 1h}\n", "marenostrum5")


def test_marenostrum5_refuses_a_4_day_gpu_job() -> None:
    with pytest.raises(LimitError, match=r"over the limit of 'acc' \(3-00:00:00\)"):
        _resolve("name: g\nrun: x\nresources: {gpus_per_node: 4, time: 4d}\n", "marenostrum5")
    assert "--time=3-00:00:00" in _directives(
        "name: g\nrun: x\nresources: {gpus_per_node: 4, time: 3d}\n", "marenostrum5"
    )


# --- Leonardo: the DCGP CPU partition ----------------------------------------------------------------


def test_leonardo_16_task_cpu_job_goes_to_dcgp() -> None:
    d = _directives("name: c\nrun: x\nresources: {tasks_per_node: 16, time: 2h}\n", "leonardo")
    assert {"--partition=dcgp_usr_prod", "--qos=normal", "--ntasks-per-node=16"} <= d
    # a one-core job still goes to the budget-free serial partition
    assert "--partition=lrd_all_serial" in _directives("name: c\nrun: x\nresources: {time: 1h}\n", "leonardo")
    with pytest.raises(LimitError, match="at most 16"):
        _resolve("name: c\nrun: x\nresources: {nodes: 17, tasks_per_node: 112, time: 1h}\n", "leonardo")


# --- LUMI: exclusive on small-g asks for the node's memory -------------------------------------------


def test_lumi_exclusive_on_small_g_renders_the_node_memory() -> None:
    text = "name: e\nrun: x\nresources: {gpus_per_node: 2, exclusive: true, partition: small-g, time: 1h}\n"
    d = _directives(text, "lumi")
    # "--exclusive does not give the node's memory on partitions allocatable by resource" (LUMI course)
    assert {"--partition=small-g", "--exclusive", "--mem=480G"} <= d
    assert not any(x.startswith("--mem-per-gpu") for x in d)
    # a memory the user asks for wins; standard-g (whole nodes) gets no --mem of its own
    assert "--mem=100G" in _directives(text.replace("time: 1h", "time: 1h, memory: 100G"), "lumi")
    assert not any(x.startswith("--mem") for x in _directives(GPU4, "lumi"))


# --- the user's comment beside aifactory's token (JUPITER PrEpS) -------------------------------------


def test_a_user_comment_is_kept_beside_the_token() -> None:
    job = _resolve(GPU4 + "slurm: {comment: 'THP=never;HUGEPAGES=2M'}\n", "jupiter")
    assert job.user_comment == "THP=never;HUGEPAGES=2M"
    assert "comment" not in job.slurm_options  # no second --comment line
    merged = job.comment_for(TOKEN)
    assert merged == f"aifactory:{TOKEN};THP=never;HUGEPAGES=2M"
    assert token_of(merged) == TOKEN  # sync still finds the job by its token
    assert _resolve(GPU4, "jupiter").comment_for(TOKEN) == f"aifactory:{TOKEN}"


@pytest.mark.parametrize("comment", ["a b", "aifactory:feed", "x$(id)", "true"])
def test_a_comment_that_cannot_sit_beside_the_token_is_refused(comment: str) -> None:
    value = "true" if comment == "true" else repr(comment)
    with pytest.raises(ConfigError, match=r"slurm\.comment"):
        _resolve(GPU4 + f"slurm: {{comment: {value}}}\n", "jupiter")


def test_an_abbreviation_of_comment_is_still_refused() -> None:
    with pytest.raises(SpecError, match="abbreviation"):
        load_spec_text("run: x\nslurm: {comm: x}\n")


# --- site environment ----------------------------------------------------------------------------------


@pytest.mark.parametrize("site", ["jupiter", "jedi", "juwels-booster"])
def test_jsc_sets_omp_num_threads_from_the_task(site: str) -> None:
    # JSC's job template: export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK}
    assert _resolve(GPU4, site).shell_env == {"OMP_NUM_THREADS": "${SLURM_CPUS_PER_TASK}"}
    # the user's own value wins
    assert _resolve(GPU4 + "env: {OMP_NUM_THREADS: '4'}\n", site).shell_env == {}
    assert any("offline mode" in n for n in load_profile(site).profile.notes)


def test_lumi_gpu_jobs_get_miopen_caches_and_the_rccl_variables() -> None:
    job = _resolve(GPU4, "lumi")
    assert job.shell_env == {
        "MIOPEN_USER_DB_PATH": "/tmp/${USER}-miopen-cache-${SLURM_JOB_ID}",
        "MIOPEN_CUSTOM_CACHE_DIR": "${MIOPEN_USER_DB_PATH}",
    }
    assert {"NCCL_SOCKET_IFNAME": "hsn", "NCCL_NET_GDR_LEVEL": "3", "CXI_FORK_SAFE": "1"}.items() <= job.env.items()
    script = render(job, TOKEN, TOKEN[:8]).script
    assert "export NCCL_SOCKET_IFNAME=hsn\n" in script and "export FI_CXI_DISABLE_CQ_HUGETLB=1\n" in script
    # CPU jobs (LUMI-C) get neither
    cpu = _resolve("name: c\nrun: x\nresources: {time: 1h}\n", "lumi")
    assert cpu.shell_env == {} and "NCCL_SOCKET_IFNAME" not in cpu.env


@pytest.mark.parametrize("value", ["$(id)", "`id`", 'a"b', "a b", "x\\y"])
def test_a_profile_shell_env_cannot_run_commands(tmp_path, value: str) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(f"extends: lumi\nshell_env: {{X: {value!r}}}\n")
    with pytest.raises(ProfileError, match=r"shell_env\.X"):
        load_profile_file(path)


@pytest.mark.parametrize(
    ("site", "account", "workdir"),
    [
        ("jupiter", "exalab", "/e/scratch/exalab/jdoe/aifactory/t-abc"),
        ("juwels-booster", "exalab", "/p/scratch/exalab/jdoe/aifactory/t-abc"),
        ("karolina", "EU-25-10", "/scratch/project/eu-25-10/jdoe/aifactory/t-abc"),
        ("deucalion", "f202500017aivlabdeucaliong", "/projects/F202500017AIVLABDEUCALION/jdoe/aifactory/t-abc"),
        ("vega", "d2026d06-166-users", "aifactory/jobs/t-abc"),  # project path UNKNOWN: $HOME
    ],
)
def test_jobs_live_in_project_or_scratch_dirs(site: str, account: str, workdir: str) -> None:
    backend = SlurmBackend(load_profile(site), LocalTransport())
    job = Job(id="abc", token=TOKEN, name="t", site=site, state="PREPARED", created_at="", updated_at="")
    assert backend.workdir_for(job, account, "jdoe") == workdir


# --- containers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("site", ["meluxina", "vega", "karolina", "discoverer", "lucia", "jedi", "juwels-booster"])
def test_an_unknown_container_runtime_is_refused_saying_so(site: str) -> None:
    assert load_profile(site).profile.container.runtime is None
    with pytest.raises(LimitError, match=r"has a container runtime .* is not known"):
        _resolve(
            "name: c\nrun: x\nresources: {gpus_per_node: 1, time: 1h}\ncontainer: {image: a.sif}\n", site, qos="p1"
        )


@pytest.mark.parametrize("site", ["leonardo", "marenostrum5", "deucalion", "jupiter"])
def test_nvidia_container_jobs_get_the_gpu_flag(site: str) -> None:
    def exec_line(text: str) -> str:
        script = render(_resolve(text, site), TOKEN, TOKEN[:8]).script
        return next(line for line in script.splitlines() if " exec " in line and "a.sif" in line)

    assert " exec --nv " in exec_line(GPU4 + "container: {image: a.sif}\n")
    assert exec_line(GPU4 + "container: {image: a.sif}\n").count("--nv") == 1
    assert "--nv" not in exec_line("name: c\nrun: x\nresources: {time: 1h}\ncontainer: {image: a.sif}\n")
