import pytest

from aifactory_cli.errors import ConfigError, LimitError
from aifactory_cli.settings import Settings
from aifactory_cli.sites.profile import load_profile
from aifactory_cli.sites.resolve import Overrides, resolve
from aifactory_cli.sites.userconfig import SiteUserSettings, UserConfig
from aifactory_cli.spec.model import load_spec_text

ACCOUNT = Overrides(account="project_465000123")


def _resolve(
    text: str,
    site: str = "lumi",
    ov: Overrides = ACCOUNT,
    config: UserConfig | None = None,
    env: Settings | None = None,
):
    return resolve(load_spec_text(text).spec, load_profile(site), config or UserConfig(), ov, env)


@pytest.fixture(autouse=True)
def _home(aif_home):
    return aif_home


def test_lumi_whole_node_gpu_goes_to_standard_g() -> None:
    job = _resolve("run: x\nresources: {nodes: 2, gpus_per_node: all}\n")
    assert job.partition_name == "standard-g"
    assert (job.gpus_per_node, job.tasks_per_node, job.cpus_per_task) == (8, 8, 7)
    assert job.cpu_bind and job.cpu_bind.startswith("mask_cpu:fe000000000000,")
    assert job.modules == ["LUMI/25.03", "partition/G"]


def test_lumi_sub_node_gpu_goes_to_small_g() -> None:
    job = _resolve("run: x\nresources: {gpus_per_node: 1}\n")
    assert job.partition_name == "small-g"
    assert (job.tasks_per_node, job.cpus_per_task, job.memory_per_gpu) == (1, 7, "60G")
    assert job.cpu_bind is None  # binding only on whole nodes


def test_lumi_cpu_jobs_go_to_small_or_standard() -> None:
    assert _resolve("run: x\n").partition_name == "small"
    job = _resolve("run: x\nresources: {nodes: 8, tasks_per_node: 128}\n")
    assert job.partition_name == "standard"
    assert job.modules == ["LUMI/25.03", "partition/C"]


def test_jupiter_layout() -> None:
    job = _resolve("run: x\nresources: {nodes: 2, gpus_per_node: all}\n", "jupiter", Overrides(account="exalab"))
    assert job.partition_name == "booster"
    assert (job.gpus_per_node, job.tasks_per_node, job.cpus_per_task, job.gpus_per_task) == (4, 4, 72, 1)
    assert job.time == "01:00:00"  # the partition's default


def test_time_defaults_and_formats() -> None:
    assert _resolve("run: x\nresources: {time: 90m}\n").time == "01:30:00"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("run: x\nresources: {gpus_per_node: 16}\n", "16 GPUs per node asked"),
        ("run: x\nresources: {gpus_per_node: 8, time: 4d}\n", "over the limit"),
        ("run: x\nresources: {gpus_per_node: 8, partition: standard-g, time: 3d}\n", "over the limit of 'standard-g'"),
        ("run: x\nresources: {gpus_per_node: 2, partition: small}\n", "CPU partition"),
        ("run: x\nresources: {gpus_per_node: 8, nodes: 2000}\n", "at most 1024"),
        ("run: x\nresources: {partition: standrad-g}\n", "did you mean 'standard-g'"),
        ("run: x\nresources: {gpus_per_node: 8, cpus_per_task: 8}\n", "56 usable cores"),
        ("run: x\nresources: {gpus_per_node: 1, nodes: 8, partition: small-g}\n", "at most 4"),
        ("run: x\nresources: {gpus_per_node: 8, tasks_per_node: 3}\n", "evenly"),
    ],
)
def test_refused_before_anything_is_sent(text: str, needle: str) -> None:
    with pytest.raises(LimitError) as info:
        _resolve(text)
    assert needle in str(info.value)


def test_missing_account_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError) as info:
        _resolve("run: x\n", ov=Overrides())
    assert "requires a Slurm account" in info.value.message
    assert "sites: {lumi: {account:" in (info.value.hint or "")


def test_account_from_config_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    config = UserConfig(sites={"lumi": SiteUserSettings(account="project_465000999")})
    assert _resolve("run: x\n", ov=Overrides(), config=config).account == "project_465000999"
    env = Settings.from_env({"AIFACTORY_ACCOUNT": "project_465000777"})
    assert _resolve("run: x\n", ov=Overrides(), config=config, env=env).account == "project_465000777"
    assert (
        _resolve("run: x\n", ov=Overrides(account="project_465000555"), config=config, env=env).account
        == "project_465000555"
    )


def test_resolve_does_not_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # pure: the environment comes in as an argument (callers pass settings.current())
    config = UserConfig(sites={"lumi": SiteUserSettings(account="project_465000999")})
    monkeypatch.setenv("AIFACTORY_ACCOUNT", "project_465000777")
    assert _resolve("run: x\n", ov=Overrides(), config=config).account == "project_465000999"
    assert _resolve("run: x\n", ov=Overrides(), config=config, env=Settings()).account == "project_465000999"


def test_hostile_account_is_refused() -> None:
    with pytest.raises(ConfigError):
        _resolve("run: x\n", ov=Overrides(account="p; touch /tmp/x"))


def test_local_site_refuses_gpus() -> None:
    with pytest.raises(LimitError):
        _resolve("run: x\nresources: {gpus_per_node: 1}\n", "local", Overrides())


def test_container_needs_a_runtime() -> None:
    with pytest.raises(LimitError):
        _resolve("run: x\ncontainer: {image: a.sif}\n", "local", Overrides())
    job = _resolve("run: x\ncontainer: {image: a.sif}\n")
    assert job.container_runtime == "singularity"


def test_the_job_dir_user_is_the_login_user_aifactory_ssh_user_first() -> None:
    # the job dir is named for the user aifactory logs in as: AIFACTORY_SSH_USER, then the config,
    # then the profile (it used to skip AIFACTORY_SSH_USER: logged in as alice, job dir under bob)
    config = UserConfig(sites={"lumi": SiteUserSettings(user="bob")})
    assert _resolve("run: x\n", config=config, env=Settings(ssh_user="alice")).user == "alice"
    assert _resolve("run: x\n", config=config, env=Settings()).user == "bob"


def test_environment_layers_site_then_partition_then_spec_whatever_their_kind() -> None:
    from aifactory_cli.sites.profile import LoadedProfile

    loaded = load_profile("lumi")
    profile = loaded.profile.model_copy(deep=True)
    profile.env["A"], profile.shell_env["B"] = "site", "${SITE}"
    part = profile.partitions["small"]
    part.shell_env["A"] = "${PART}"  # the partition's shell_env wins over the site's literal env
    part.env["B"] = "part"  # and its literal env over the site's shell_env
    layered = LoadedProfile(profile, loaded.files, loaded.merged)
    spec = load_spec_text("run: x\nenv: {C: spec}\nresources: {partition: small}\n").spec
    job = resolve(spec, layered, UserConfig(), ACCOUNT, None)
    assert (job.env.get("A"), job.shell_env.get("A")) == (None, "${PART}")
    assert (job.env.get("B"), job.shell_env.get("B")) == ("part", None)
    spec = load_spec_text("run: x\nenv: {A: spec}\nresources: {partition: small}\n").spec
    job = resolve(spec, layered, UserConfig(), ACCOUNT, None)
    assert (job.env.get("A"), job.shell_env.get("A")) == ("spec", None)  # the spec wins over all
