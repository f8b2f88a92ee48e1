"""Shell completion of values (site names, job ids), through the CLI as bash and zsh ask for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLES


def _complete(words: str, shell: str = "bash") -> list[str]:
    env = {**os.environ, "_AIFACTORY_COMPLETE": f"complete_{shell}"}
    if shell == "bash":
        parts = words.split(" ")
        env.update(COMP_WORDS=words, COMP_CWORD=str(len(parts) - 1))
    else:
        env["_TYPER_COMPLETE_ARGS"] = words
    proc = subprocess.run([sys.executable, "-m", "aifactory_cli"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return [w for w in proc.stdout.splitlines() if w] if shell == "bash" else [proc.stdout]


def test_site_names(aif_home: Path) -> None:
    assert _complete("aifactory render x.yaml --site lu") == ["lucia", "lumi"]
    # the test profiles dir is on the search path too (user profiles complete like built-in ones)
    assert "testbed" in _complete("aifactory sites check t")
    assert _complete("aifactory submit x.yaml --site a") == ["auto"]
    # a comma-separated list completes its last name, without repeating a chosen one
    assert _complete("aifactory plan x.yaml --sites lumi,ju") == ["lumi,jupiter", "lumi,juwels-booster"]
    assert _complete("aifactory plan x.yaml --sites lumi,lu") == ["lumi,lucia"]


def test_job_ids_with_name_site_and_state(cli, aif_home: Path) -> None:
    # nothing tracked yet: nothing offered, and no store is created just to complete
    assert _complete("aifactory logs ") == []
    assert not (aif_home / "state").exists() and not aif_home.exists()
    job_id = cli("submit", str(EXAMPLES / "hello.yaml")).stdout.strip()
    assert cli("wait", job_id, "--timeout", "60").code == 0
    (zsh,) = _complete("aifactory logs ", shell="zsh")
    assert f'"{job_id}":"hello (local, COMPLETED)"' in zsh
    assert _complete(f"aifactory cancel {job_id[:3]}") == [job_id]
    assert _complete("aifactory status hel") == ["hello"]  # a unique name is a job reference too
