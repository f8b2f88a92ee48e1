"""Steps inside a running job (`aifactory exec`, `aifactory shell`): the pure command builders and
parsers of scheduler/steps.py, on output recorded on the test bed (Slurm 22.05)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from aifactory_cli.scheduler import steps

# `squeue --noheader --jobs=ID --format=%T|%N` on the test bed: a 2-node job, a pending one, a 1-node one
RECORDED_RUNNING = "RUNNING|nid[005000-005001]\n"
RECORDED_PENDING = "PENDING|\n"
RECORDED_ONE = "RUNNING|nid001000\n"


@pytest.mark.parametrize(
    ("hostlist", "expanded"),
    [
        ("nid[005000-005001]", ["nid005000", "nid005001"]),
        ("nid001000", ["nid001000"]),
        ("nid[005000-005002,005007],x1", ["nid005000", "nid005001", "nid005002", "nid005007", "x1"]),
        ("jwb[0001,0010-0011]", ["jwb0001", "jwb0010", "jwb0011"]),
        ("n[8-10]", ["n8", "n9", "n10"]),  # no padding unless the low end has a leading zero
        ("r[1-2]n[01-02]", ["r1n01", "r1n02", "r2n01", "r2n02"]),
        ("a,b[1-2],c", ["a", "b1", "b2", "c"]),
    ],
)
def test_hostlists_expand_as_scontrol_show_hostnames(hostlist: str, expanded: list[str]) -> None:
    assert steps.expand_hostlist(hostlist) == expanded


def test_the_expander_agrees_with_scontrol_where_slurm_is_installed() -> None:
    hostlist = "nid[005000-005002,005007],x[1,3-4]y[08-09]"
    try:
        real = subprocess.run(["scontrol", "show", "hostnames", hostlist], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("no scontrol here")
    if real.returncode != 0:
        pytest.skip(f"scontrol failed: {real.stderr}")
    assert steps.expand_hostlist(hostlist) == real.stdout.split()


def test_squeue_output_gives_the_state_and_the_nodes() -> None:
    running = steps.parse_nodes(RECORDED_RUNNING)
    assert running is not None and running.state == "RUNNING"
    assert running.nodes == ["nid005000", "nid005001"]
    pending = steps.parse_nodes(RECORDED_PENDING)
    assert pending is not None and pending.state == "PENDING" and pending.nodes == []
    one = steps.parse_nodes(RECORDED_ONE)
    assert one is not None and one.nodes == ["nid001000"]
    assert steps.parse_nodes("") is None  # squeue no longer lists the job
    assert steps.nodes_command("4790") == ["squeue", "--noheader", "--jobs=4790", "--format=%T|%N"]


def test_a_step_on_one_node_and_on_every_node() -> None:
    one = shlex.split(steps.step_command("4790", 'exec "$@"\n', ["hostname"], nodes=["nid005001"]))
    assert one[: one.index("bash")] == [
        "srun",
        "--jobid=4790",
        "--overlap",
        "--nodes=1",
        "--ntasks=1",
        "--nodelist=nid005001",
    ]
    every = shlex.split(steps.step_command("4790", "p", ["true"], nodes=["a", "b"]))
    assert "--ntasks-per-node=1" in every and "--label" in every and "--nodes=2" in every and "--ntasks=2" in every
    assert "--nodelist=a,b" in every
    shell = shlex.split(steps.step_command("4790", "p", steps.shell_argv(), nodes=["a"], pty=True))
    assert "--pty" in shell and "--label" not in shell
    with pytest.raises(ValueError):
        steps.step_command("1", "p", ["x"], nodes=[])


def test_the_command_words_reach_the_step_as_they_were_typed(tmp_path: Path) -> None:
    """Each word stays one word, nothing in it is expanded: the line is run by a real bash (in an
    empty temp dir), with a stand-in srun that drops its own options. The probes only create marker
    files, so that a broken quoting shows as a failure, never as damage."""
    argv = ["printf", "%s|", "a b", "$HOME", "`touch tick`", "$(touch dollar)", "x; touch semi", "'q'", '"d"', "*"]
    preamble = 'exec "$@"\n'
    line = steps.step_command("7", preamble, argv, nodes=["n1"])
    fake_srun = 'srun() { while [ "${1#--}" != "$1" ]; do shift; done; "$@"; }; '
    out = subprocess.run(["bash", "-c", fake_srun + line], capture_output=True, text=True, timeout=10, cwd=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no marker file: nothing was run
    assert out.returncode == 0, out.stderr
    assert out.stdout == "|".join(argv[2:]) + "|"


def test_labels_become_node_names() -> None:
    nodes = ["nid005000", "nid005001"]
    assert steps.relabel(b"0: hello", nodes) == b"nid005000: hello"
    assert steps.relabel(b"1: ", nodes) == b"nid005001: "
    assert steps.relabel(b"no label", nodes) == b"no label"
    assert steps.relabel(b"5: beyond", nodes) == b"5: beyond"
    got: list[bytes] = []
    labeller = steps.LineLabeller(nodes, got.append)
    labeller.feed(b"0: a\n1: b")
    labeller.feed(b"c\n0: partial")
    labeller.flush()
    assert b"".join(got) == b"nid005000: a\nnid005001: bc\nnid005000: partial"


def test_an_interrupted_steps_cancel_finds_it_by_name(tmp_path: Path) -> None:
    """The pipeline, run by bash with stand-ins for squeue (its recorded --steps rows) and scancel
    first on PATH (never the real ones: xargs runs programs, not shell functions)."""
    line = steps.cancel_step_command("5418", "aif-exec-abcd1234")
    recorded = "5418.0|bash\n5418.2|aif-exec-abcd1234\n5418.3|aif-exec-other\n5418.batch|batch\n"
    (tmp_path / "squeue").write_text(f'#!/bin/sh\necho "squeue $*" >&2\nprintf %s {shlex.quote(recorded)}\n')
    (tmp_path / "scancel").write_text('#!/bin/sh\necho "scancel $*"\n')
    for stub in ("squeue", "scancel"):
        (tmp_path / stub).chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=10, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "scancel 5418.2\n"
    assert "squeue --steps --noheader --jobs=5418 --format=%i|%j" in out.stderr
    named = shlex.split(steps.step_command("5418", "p", ["x"], nodes=["a"], name="aif-exec-abcd1234"))
    assert "--job-name=aif-exec-abcd1234" in named
