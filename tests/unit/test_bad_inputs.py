"""A catalogue of bad inputs (spec, profile, config, CLI arguments): each gets the contract's exit
code, a message that names the file/key and a fix, no traceback, and nothing is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES

GOOD = "run: echo hi\n"
# (case id, spec text or None, extra CLI args, config text, expected exit, words the message must hold)
CASES = [
    (
        "unknown-key",
        "run: x\nresources: {nodes: 1, gpus_pernode: 2}\n",
        [],
        None,
        2,
        ["job.yaml:2", "gpus_pernode", "did you mean 'gpus_per_node'"],
    ),
    ("typo-top-key", "run: x\nmodlues: [a]\n", [], None, 2, ["job.yaml:2", "did you mean 'modules'"]),
    ("bad-time", "run: x\nresources: {time: 2 hours}\n", [], None, 2, ["job.yaml:2", "resources.time", "90m, 2h"]),
    (
        "malformed-yaml",
        "name: x\nresources:\n  nodes: 1\n time: 5m\nrun: x\n",
        [],
        None,
        2,
        ["job.yaml:4", "malformed YAML"],
    ),
    (
        "too-many-gpus",
        "run: x\nresources: {gpus_per_node: 16}\n",
        ["--site", "lumi", "-A", "project_465000001"],
        None,
        2,
        ["16 GPUs per node", "gpus_per_node: 8"],
    ),
    (
        "time-over-limit",
        "run: x\nresources: {gpus_per_node: 8, partition: standard-g, time: 3d}\n",
        ["--site", "lumi", "-A", "project_465000001"],
        None,
        2,
        ["over the limit of 'standard-g'", "2-00:00:00"],
    ),
    ("missing-account", GOOD, ["--site", "lumi"], None, 2, ["requires a Slurm account", "--account"]),
    ("unknown-site", GOOD, ["--site", "lumy"], None, 4, ["unknown site 'lumy'", "did you mean 'lumi'"]),
    (
        "gpu-on-cpu-partition",
        "run: x\nresources: {gpus_per_node: 2, partition: small}\n",
        ["--site", "lumi", "-A", "project_465000001"],
        None,
        2,
        ["'small' is a CPU partition"],
    ),
    (
        "typo-partition",
        "run: x\nresources: {partition: standrad-g}\n",
        ["--site", "lumi", "-A", "project_465000001"],
        None,
        2,
        ["no partition 'standrad-g'", "did you mean 'standard-g'"],
    ),
    (
        "too-many-nodes",
        "run: x\nresources: {gpus_per_node: 8, nodes: 2000}\n",
        ["--site", "lumi", "-A", "project_465000001"],
        None,
        2,
        ["2000 nodes", "1024"],
    ),
    ("hostile-name", "name: 'x; rm -rf /'\nrun: x\n", [], None, 2, ["job.yaml:1", "not a valid name"]),
    ("hostile-account", GOOD, ["--site", "lumi", "-A", "p;id"], None, 2, ["not a valid Slurm account"]),
    ("gpu-on-local", "run: x\nresources: {gpus_per_node: 1}\n", [], None, 2, ["local site has no GPUs"]),
    ("protected-slurm-option", "run: x\nslurm: {partition: x}\n", [], None, 2, ["slurm.partition is set by aifactory"]),
    # options only some jobs' scripts set (--qos with a QoS, --kill-on-invalid-dep with depends_on)
    ("protected-qos", "run: x\nslurm: {qos: high}\n", [], None, 2, ["job.yaml:2", "slurm.qos is set by aifactory"]),
    (
        "protected-kill-on-invalid-dep",
        "run: x\nslurm:\n  kill-on-invalid-dep: 'no'\n",
        [],
        None,
        2,
        ["job.yaml:2", "slurm.kill-on-invalid-dep is set by aifactory"],
    ),
    ("missing-upload", "run: x\nupload: [nosuch.txt]\n", [], None, 2, ["upload entry 'nosuch.txt' does not exist"]),
    ("config-unknown-key", GOOD, [], "default_site: local\nsitez: {}\n", 2, ["config.yaml:2", "did you mean 'sites'"]),
    ("config-malformed", GOOD, [], "sites: [\n", 2, ["config.yaml", "malformed YAML"]),
    ("bad-cli-option", GOOD, ["--nodes", "3"], None, 2, ["No such option"]),
    # sbatch reads a unique prefix as the whole option: --parti would override --partition
    (
        "abbreviated-slurm-option",
        "run: x\nslurm: {parti: debug}\n",
        [],
        None,
        2,
        ["job.yaml:2", "slurm.parti is an abbreviation sbatch would read as --partition"],
    ),
    # the local site forks every task here: an absurd node count is refused, not started
    (
        "local-task-limit",
        "run: x\nresources: {nodes: 99999999999999999999999}\n",
        [],
        None,
        2,
        ["= 99999999999999999999999 processes, more than the"],
    ),
    (
        "typo-in-site-override",
        "run: x\nsites:\n  lumi: {resources: {gpus_pernode: 2}}\n",
        ["--site", "lumi", "-A", "project_465000001"],
        None,
        2,
        ["job.yaml:3", "sites.lumi.resources.gpus_pernode", "did you mean 'gpus_per_node'"],
    ),
    ("reserved-env", "run: x\nenv: {AIF_JOB_DIR: /tmp}\n", [], None, 2, ["job.yaml:2", "AIF_ are set by aifactory"]),
    ("duplicate-key", "name: x\nrun: echo a\nrun: echo b\n", [], None, 2, ["job.yaml:3", "duplicate key 'run'"]),
    ("recursive-alias", "run: x\nenv: &a {A: *a}\n", [], None, 2, ["job.yaml:2", "recursive structure"]),
    (
        "alias-bomb",
        "run: x\na0: &a0 [x,x,x,x,x,x,x,x,x]\n"
        + "".join(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 8)),
        [],
        None,
        2,
        ["expands to more than 200000 values"],
    ),
    # checked before the job is recorded (no PREPARED record left behind) and before any login
    (
        "persist-not-seconds",
        GOOD,
        ["--site", "testbed", "-A", "project_465000001"],
        None,
        2,
        ["AIFACTORY_PERSIST='-5' is not a number of seconds"],
    ),
]
ENV = {"persist-not-seconds": {"AIFACTORY_PERSIST": "-5"}}


@pytest.mark.parametrize(("case", "spec", "args", "config", "code", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(cli, aif_home: Path, tmp_path: Path, case, spec, args, config, code, words) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(spec)
    env = dict(ENV.get(case, {}))
    if config is not None:
        cfg = tmp_path / "config.yaml"
        cfg.write_text(config)
        env["AIFACTORY_CONFIG"] = str(cfg)
    r = cli("submit", str(path), *args, env=env)
    assert r.code == code, (r.stdout, r.stderr)
    for word in words:
        assert word in r.stderr, (word, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stdout == ""
    if case != "bad-cli-option":
        assert "hint:" in r.stderr or "did you mean" in r.stderr or "line" in r.stderr or ":" in r.stderr
    listed = cli("list", "--json")
    assert json.loads(listed.stdout)["jobs"] == []


def test_bad_profile_is_reported_with_file_and_key(cli, aif_home: Path, tmp_path: Path) -> None:
    prof = tmp_path / "mysite.yaml"
    prof.write_text("extends: lumi\nsssh: {host: x}\n")
    r = cli("sites", "validate", str(prof))
    assert r.code == 2
    assert f"{prof}:2" in r.stderr and "did you mean 'ssh'" in r.stderr
    prof.write_text("extends: lumu\n")
    r = cli("sites", "validate", str(prof))
    assert r.code == 2 and "did you mean 'lumi'" in r.stderr


def test_unknown_job_is_exit_4(cli) -> None:
    r = cli("status", "nosuchjob")
    assert r.code == 4 and "no tracked job" in r.stderr


def test_debug_shows_the_cause(cli, tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: x\nresources:\n  nodes: 1\n time: 5m\nrun: x\n")
    r = cli("--debug", "submit", str(path))
    assert r.code == 2 and "Traceback" in r.stderr


def test_examples_render_for_lumi_without_account_as_preview(cli) -> None:
    r = cli("render", str(EXAMPLES / "train.yaml"), "--site", "lumi")
    assert r.code == 0 and "--account=ACCOUNT_NOT_SET" in r.stdout and "no account set" in r.stderr


def test_yaml_plain_scalars_keep_their_text(cli, tmp_path: Path) -> None:
    """YAML 1.1 would read 1:00:00 as 3600 (minutes -> 60 h), 0755 as 493, yes as true, 3e-4 as 0.0003."""
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "name: t\nresources: {time: 1:00:00}\nenv: {A: 1:30, B: yes, D: 0755, F: 0x1F, N: 7}\n"
        "matrix: {LR: [1e-4, 3e-4, 0.10]}\nrun: echo\n"
    )
    r = cli("render", str(spec), "--site", "lumi", "-A", "project_465000001")
    assert r.code == 0, r.stderr
    assert "#SBATCH --time=01:00:00" in r.stdout
    for line in ("export A=1:30", "export B=yes", "export D=0755", "export F=0x1F", "export N=7"):
        assert line in r.stdout, line
    assert "LR=1e-4" in r.stdout and "LR=3e-4" in r.stdout and "LR=0.10" in r.stdout


def test_typo_in_a_sites_override_is_flagged(cli, tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text('run: x\nsites:\n  lumii: {env: {A: "1"}}\n')
    r = cli("render", str(spec), "--site", "lumi", "-A", "project_465000001")
    assert r.code == 0
    assert "sites.lumii: no site 'lumii' is known" in r.stderr and "did you mean 'lumi'" in r.stderr


def test_upload_of_a_fifo_is_refused_before_anything_is_recorded(cli, tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "pipe")
    spec = tmp_path / "job.yaml"
    spec.write_text("run: x\nupload: [pipe]\n")
    r = cli("submit", str(spec), timeout=60)
    assert r.code == 2, r.stderr
    assert "upload entry 'pipe'" in r.stderr and "not a regular file" in r.stderr
    assert json.loads(cli("list", "--json").stdout)["jobs"] == []


def test_an_internal_error_has_its_own_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    """A bug in aifactory exits 70 (EX_SOFTWARE), not 1: CI must not read a crash as a failed job."""
    import typer

    from aifactory_cli.cli.boundary import run_app
    from aifactory_cli.errors import EXIT_INTERNAL

    app = typer.Typer()

    @app.command()
    def boom() -> None:
        raise RuntimeError("a bug")

    @app.command()
    def other() -> None:  # two commands, so typer keeps the sub-command name
        pass

    assert run_app(app, ["boom"]) == EXIT_INTERNAL == 70
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: a bug" in err and "Traceback" not in err


def test_a_matrix_over_slurms_default_array_limit_is_flagged(cli, tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("run: x\nmatrix: {A: [" + ",".join(str(i) for i in range(1200)) + "]}\n")
    r = cli("render", str(spec), "--site", "lumi", "-A", "project_465000001")
    assert r.code == 0 and "--array=0-1199" in r.stdout
    assert "the matrix has 1200 elements; Slurm's default MaxArraySize" in r.stderr


def test_yaml_merge_keys_may_override(cli, tmp_path: Path) -> None:
    """`<<: *base` then a local key is an override, not a duplicate key."""
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "common: &c {OMP_NUM_THREADS: '7', MODE: a}\nrun: echo\nenv: {<<: *c, MODE: b}\n"
        "matrix: {WHEN: [2024-01-01T10:00:00Z]}\n"
    )
    r = cli("render", str(spec), "--site", "lumi", "-A", "project_465000001")
    # `common` is not a spec key: the merge is accepted, the unknown key is what fails
    assert r.code == 2 and "unknown key 'common'" in r.stderr and "duplicate" not in r.stderr
    spec.write_text(
        "run: echo\nenv: {<<: {OMP_NUM_THREADS: '7', MODE: a}, MODE: b}\nmatrix: {WHEN: [2024-01-01T10:00:00Z]}\n"
    )
    r = cli("render", str(spec), "--site", "lumi", "-A", "project_465000001")
    assert r.code == 0, r.stderr
    assert "export MODE=b" in r.stdout and "export OMP_NUM_THREADS=7" in r.stdout
    assert "WHEN=2024-01-01T10:00:00Z" in r.stdout  # a date-time stays as written


def test_a_profile_cannot_put_shell_text_where_a_variable_name_goes(cli, aif_home: Path, tmp_path: Path) -> None:
    # gpu.visible_devices_env is written unquoted as `export NAME=...` in every job script
    prof = tmp_path / "mysite.yaml"
    prof.write_text("extends: lumi\ngpu: {vendor: amd, model: MI250X, visible_devices_env: 'X=1; touch /tmp/pwn; Y'}\n")
    r = cli("sites", "validate", str(prof))
    assert r.code == 2 and "visible_devices_env" in r.stderr, r.stderr
