"""The library API against the real thing (issue 20): examples/notebook.py, a script that uses only
`import aifactory_cli as aif`, run as a user runs it on the embedded local site and on the test bed
(lumi-bed: the built-in LUMI profile on real Slurm over real SSH). It submits, waits, reads the logs,
fetches a result, and cancels a second job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.real.bedjobs import bed_env

pytestmark = pytest.mark.real


@pytest.mark.parametrize(
    ("site", "account"), [("local", None), ("lumi-bed", "project_465000001")], ids=["local", "lumi-bed"]
)
def test_notebook_example_submits_waits_logs_fetches_cancels(site: str, account: str | None, tmp_path: Path) -> None:
    env = bed_env(tmp_path)
    args = [sys.executable, str(EXAMPLES / "notebook.py"), site, *([account] if account else [])]
    proc = subprocess.run(
        args, capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120, stdin=subprocess.DEVNULL
    )
    print(f"\n--- {' '.join(args[1:])}\n{proc.stdout}--- notices (stderr)\n{proc.stderr}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert ": COMPLETED, exit code 0" in out
    assert "stdout: Hello from aifactory: job " in out  # the job's own output, read back
    assert (tmp_path / "notebook-results" / "results" / "answer.txt").read_text() == "42\n"
    assert "fetched notebook-results/results/answer.txt: 42" in out
    long_id = out.split(" is ", 1)[0].rsplit("\n", 1)[-1]
    assert f"{long_id}: CANCELLED" in out and " notebook-long    CANCELLED" in out
    assert "NotFound: no tracked job 'no-such-job'" in out
    assert f"cancel sent for {long_id} on {site}" in proc.stderr  # notices: logging, not stdout
