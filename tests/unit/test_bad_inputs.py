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
    ("missing-upload", "run: x\nupload: [nosuch.txt]\n", [], None, 2, ["upload entry 'nosuch.txt' does not exist"]),
    ("config-unknown-key", GOOD, [], "default_site: local\nsitez: {}\n", 2, ["config.yaml:2", "did you mean 'sites'"]),
    ("config-malformed", GOOD, [], "sites: [\n", 2, ["config.yaml", "malformed YAML"]),
    ("bad-cli-option", GOOD, ["--nodes", "3"], None, 2, ["No such option"]),
]


@pytest.mark.parametrize(("case", "spec", "args", "config", "code", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(cli, aif_home: Path, tmp_path: Path, case, spec, args, config, code, words) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(spec)
    env = {}
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
