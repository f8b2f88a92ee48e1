"""Shared fixtures: an isolated AIFACTORY_HOME per test, and a way to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
TEST_PROFILES = REPO / "tests" / "profiles"


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def aif_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "aifhome"
    for var in [v for v in os.environ if v.startswith("AIFACTORY_")]:  # e.g. a runner's AIFACTORY_PERSIST
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIFACTORY_HOME", str(home))
    monkeypatch.setenv("AIFACTORY_PROFILES", str(TEST_PROFILES))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    return home


def run_cli(
    args: list[str],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
    stdin: str | None = None,
) -> CliResult:
    """Run `aifactory ARGS` in a subprocess, as a user or CI would (no terminal)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("NO_COLOR", "1")
    full_env["COLUMNS"] = "200"
    proc = subprocess.run(
        [sys.executable, "-m", "aifactory_cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=str(cwd) if cwd else None,
        timeout=timeout,
        input=stdin if stdin is not None else "",
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli(aif_home: Path):
    def call(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300) -> CliResult:
        return run_cli(list(args), env=env, cwd=cwd, timeout=timeout)

    return call
