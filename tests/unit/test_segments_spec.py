"""Spec `checkpoint:` / `retries:` and the limits they change (issue 18, step 1): bad input is a clear
exit 2 naming the file:line or the key; a total time over the partition's limit is allowed only with
a checkpoint, whose segment must fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aifactory_cli.errors import LimitError, SpecError
from aifactory_cli.sites.profile import load_profile
from aifactory_cli.sites.resolve import Overrides, resolve
from aifactory_cli.sites.userconfig import UserConfig
from aifactory_cli.spec.model import load_spec_text

ACCOUNT = Overrides(account="project_465000123")
LUMI = ["--site", "lumi", "-A", "project_465000001"]


@pytest.fixture(autouse=True)
def _home(aif_home):
    return aif_home


def _resolve(text: str, site: str = "lumi"):
    return resolve(load_spec_text(text, "job.yaml").spec, load_profile(site), UserConfig(), ACCOUNT)


def test_checkpoint_fields_and_defaults() -> None:
    spec = load_spec_text("run: x\ncheckpoint: {segment: 2d, grace: 10m, signal: SIGUSR2}\nretries: 3\n").spec
    assert spec.checkpoint is not None
    assert (spec.checkpoint.segment_seconds, spec.checkpoint.grace_seconds, spec.checkpoint.signal) == (
        172800,
        600,
        "USR2",
    )
    assert spec.retries == 3
    plain = load_spec_text("run: x\ncheckpoint: {}\n").spec
    assert plain.checkpoint is not None and plain.checkpoint.signal == "USR1" and plain.checkpoint.grace_seconds == 600
    assert plain.retries == 0 and load_spec_text("run: x\n").spec.checkpoint is None


def test_a_week_on_standard_g_runs_as_segments_of_the_partition_limit() -> None:
    job = _resolve("run: x\nresources: {gpus_per_node: 8, partition: standard-g, time: 7d}\ncheckpoint: {}\n")
    assert job.segments is not None
    assert job.time == "2-00:00:00"  # each Slurm job: one segment, the partition's max by default
    assert (job.segments.count, job.segments.total_seconds, job.segments.requeue) == (4, 7 * 86400, True)
    short = _resolve("run: x\nresources: {time: 3h}\ncheckpoint: {segment: 1h, grace: 5m}\nretries: 2\n")
    assert short.time == "01:00:00" and short.segments and short.segments.count == 3 and short.segments.retries == 2
    assert short.summary()["segments"]["segments"] == 3  # type: ignore[index]


def test_a_site_without_requeue_chains_dependent_jobs(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "norq.yaml").write_text("extends: lumi\nrequeue: false\n")
    monkeypatch.setenv("AIFACTORY_PROFILES", f"{tmp_path}:{Path(__file__).parents[1] / 'profiles'}")
    job = _resolve("run: x\nresources: {time: 3h}\ncheckpoint: {segment: 1h, grace: 5m}\n", "norq")
    assert job.segments is not None and job.segments.mode == "chain"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("run: x\nresources: {time: 3h}\ncheckpoint: {segment: 1h, grace: 1h}\n", ["job.yaml:3", "grace"]),
        ("run: x\nretries: -1\n", ["job.yaml:2", "retries", "greater than or equal to 0"]),
        ("run: x\ncheckpoint: {segment: 1h, signal: KILL}\n", ["job.yaml:2", "checkpoint.signal"]),
        ("run: x\ncheckpoint: {segmnt: 1h}\n", ["job.yaml:2", "did you mean 'segment'"]),
        ("run: x\ncheckpoint: {grace: 2 minutes}\n", ["job.yaml:2", "checkpoint.grace"]),
    ],
)
def test_bad_checkpoint_specs_name_the_line(text: str, words: list[str]) -> None:
    with pytest.raises(SpecError) as err:
        load_spec_text(text, "job.yaml")
    shown = str(err.value)
    for word in words:
        assert word in shown, (word, shown)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (  # a segment over the partition's limit
            "run: x\nresources: {gpus_per_node: 8, partition: standard-g, time: 7d}\ncheckpoint: {segment: 3d}\n",
            ["checkpoint.segment 3-00:00:00", "over the limit of 'standard-g' (2-00:00:00)"],
        ),
        (  # a total over the limit and no checkpoint
            "run: x\nresources: {gpus_per_node: 8, partition: standard-g, time: 7d}\n",
            ["time 7-00:00:00 is over the limit", "checkpoint:"],
        ),
        (  # the default segment (the partition's limit) is not longer than the grace
            "run: x\nresources: {partition: debug, time: 2h}\ncheckpoint: {grace: 30m}\n",
            ["checkpoint.grace 00:30:00 is not shorter than a segment", "'debug'"],
        ),
        ("run: x\nmatrix: {A: [1, 2]}\ncheckpoint: {segment: 1h, grace: 1m}\n", ["with a matrix"]),
        (  # no CPU partition takes a 4-day segment: the hint names checkpoint.segment
            "run: x\nresources: {time: 7d}\ncheckpoint: {segment: 4d}\n",
            ["checkpoint.segment 4-00:00:00 is over the limit of 'small'", "or checkpoint.segment (one segment"],
        ),
    ],
)
def test_limits_with_checkpoint(text: str, words: list[str]) -> None:
    with pytest.raises(LimitError) as err:
        _resolve(text)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_the_local_site_refuses_segments() -> None:
    with pytest.raises(LimitError, match="runs no segments"):
        _resolve("run: x\ncheckpoint: {segment: 1h, grace: 1m}\n", "local")


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("run: x\nresources: {time: 3h}\ncheckpoint: {segment: 1h, grace: 1h}\n", ["job.yaml:3", "grace"]),
        ("run: x\nretries: -2\n", ["job.yaml:2", "retries"]),
        (
            "run: x\nresources: {gpus_per_node: 8, partition: standard-g, time: 7d}\ncheckpoint: {segment: 3d}\n",
            ["checkpoint.segment", "standard-g"],
        ),
        ("run: x\nresources: {gpus_per_node: 8, partition: standard-g, time: 7d}\n", ["over the limit", "checkpoint"]),
    ],
)
def test_cli_exit_2_and_nothing_recorded(cli, tmp_path: Path, spec: str, words: list[str]) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(spec)
    r = cli("submit", str(path), *LUMI)
    assert r.code == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    for word in words:
        assert word in r.stderr, (word, r.stderr)
    assert json.loads(cli("list", "--json").stdout)["jobs"] == []


def test_the_estimate_counts_every_segment() -> None:
    from aifactory_cli.sites.billing import estimate

    one = estimate(_resolve("run: x\nresources: {gpus_per_node: 8, partition: standard-g, time: 2d}\n"))
    week = estimate(
        _resolve("run: x\nresources: {gpus_per_node: 8, partition: standard-g, time: 7d}\ncheckpoint: {}\n")
    )
    assert one is not None and week is not None
    assert week.amount == 4 * one.amount == 4 * 4 * 48  # 4 segments of 2 days, 4 GPU-hours per node-hour
    assert "x 4 segments" in week.how


def test_plan_shows_the_segments(cli, tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("run: x\nresources: {gpus_per_node: 8, partition: standard-g, time: 7d}\ncheckpoint: {}\n")
    r = cli("plan", str(path), "--sites", "lumi", "-A", "project_465000001", "--json")
    site = json.loads(r.stdout)["sites"][0]  # lumi.csc.fi is not reachable from the tests: the estimate is still shown
    assert site["charge"] == 768 and site["charge_how"].endswith("x 48 h x 4 segments"), site


@pytest.mark.parametrize("option", ["signal: B:USR1@60", "requeue: true", "no-requeue: true", "open-mode: append"])
def test_the_segment_options_are_aifactorys(option: str) -> None:
    """--signal, --requeue/--no-requeue and --open-mode come from checkpoint: and retries:."""
    with pytest.raises(SpecError, match="is set by aifactory"):
        load_spec_text(f"run: x\nslurm: {{{option}}}\n")
