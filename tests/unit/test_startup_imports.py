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
            name = line.rsplit("|", 1)[1].strip()
            mods.add(name)
            mods.add(name.split(".")[0])
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


def test_help_and_list_import_no_templates_yaml_or_models(aif_home: Path) -> None:
    # pydantic costs ~100 ms to import and rich's console ~40 ms; neither is needed to list jobs.
    # (typer 0.29 imports pydantic to coerce every option: pyproject keeps typer below it.)
    heavy = {"jinja2", "yaml", "pydantic", "pydantic_core", "rich.console", "rich.progress"}
    for args in (["--help"], ["list"]):
        mods = _imported(args, aif_home)
        assert not (mods & heavy), (args, sorted(mods & heavy))


def test_importing_the_package_loads_no_models_templates_or_ssh_stack(aif_home: Path) -> None:
    # `import aifactory_cli as aif` in a notebook: the API's names load on first use (issue 20)
    env = {**os.environ, "AIFACTORY_HOME": str(aif_home)}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import aifactory_cli; aifactory_cli.__version__"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    mods = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    tops = {m.split(".")[0] for m in mods}
    heavy = SSH_STACK | {"jinja2", "pydantic", "pydantic_core", "yaml", "rich", "typer", "sqlite3"}
    assert not (tops & heavy), sorted(tops & heavy)
    assert {m for m in mods if m.startswith("aifactory_cli")} <= {"aifactory_cli", "aifactory_cli.jobs"}
