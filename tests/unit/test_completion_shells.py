"""`--show-completion SHELL` prints that shell's script, not the detected shell's (issue 14)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

FIRST_LINE = {"bash": "_aifactory_completion() {", "zsh": "#compdef aifactory", "fish": "complete --command aifactory"}


def _show(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("_TYPER")}
    return subprocess.run(
        [sys.executable, "-m", "aifactory_cli", "--show-completion", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_named_shell_wins_over_the_detected_one(shell: str) -> None:
    proc = _show(shell)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.lstrip().startswith(FIRST_LINE[shell]), proc.stdout[:200]


def test_alone_it_still_detects_the_shell() -> None:
    # started from a bash (as a user's terminal would), not straight from pytest: detection looks at the
    # parent processes, which under a background job or CI runner need not include any shell
    env = {k: v for k, v in os.environ.items() if not k.startswith("_TYPER")}
    proc = subprocess.run(
        ["bash", "-c", '"$@"; rc=$?; exit $rc', "bash", sys.executable, "-m", "aifactory_cli", "--show-completion"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert any(proc.stdout.lstrip().startswith(first) for first in FIRST_LINE.values()), proc.stdout[:200]
