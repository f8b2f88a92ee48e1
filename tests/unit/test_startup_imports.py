"""Commands that do not talk to a remote site import no SSH stack, and `--help`/`list` no more than
they need (checked with `python -X importtime`, which lists every module a run imported)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES

SSH_STACK = {"paramiko", "fabric", "invoke", "cryptography", "nacl", "bcrypt"}


def _imported(args: list[str], home: Path) -> set[str]:
    env = {**os.environ, "AIFACTORY_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "aifactory_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    mods = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            mods.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return mods


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["list"],
        ["status", "--cached"],
        ["render", str(EXAMPLES / "train.yaml"), "--site", "lumi"],
        ["sites", "list"],
        ["submit", str(EXAMPLES / "hello.yaml"), "--wait"],
    ],
    ids=["help", "list", "status-cached", "render-lumi", "sites-list", "submit-local"],
)
def test_no_ssh_stack(args: list[str], aif_home: Path) -> None:
    mods = _imported(args, aif_home)
    assert not (mods & SSH_STACK), sorted(mods & SSH_STACK)


def test_help_and_list_import_no_templates_or_yaml(aif_home: Path) -> None:
    for args in (["--help"], ["list"]):
        mods = _imported(args, aif_home)
        assert not (mods & {"jinja2", "yaml", "rich.progress"}), (args, sorted(mods & {"jinja2", "yaml"}))
