"""The library API is typed for its users: `mypy --strict` on a script using it (examples/notebook.py)
is clean, and a misuse is caught."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLES, REPO


def _mypy_strict(path: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "MYPYPATH": ""}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache), "--no-error-summary", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(path.parent),
        timeout=300,
    )


def test_the_notebook_example_passes_mypy_strict_and_misuse_fails(tmp_path: Path) -> None:
    cache = REPO / ".mypy_cache" / "api-typing"  # reused between runs: ~2 s warm
    proc = _mypy_strict(EXAMPLES / "notebook.py", cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "import aifactory_cli as aif\n"
        "job = aif.submit('x.yaml', site='local')\n"
        "n: int = job.state\n"  # a str
        "aif.jobs(sites=['lumi'])\n"  # no such argument
        "rows: list[str] = aif.plan('x.yaml')\n"  # PlanRow, not str
    )
    proc = _mypy_strict(wrong, cache)
    assert proc.returncode == 1
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["3", "4", "5"], proc.stdout
