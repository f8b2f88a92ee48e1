"""A plain, non-editable install finds the templates and profiles inside the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_ships_templates_and_profiles_and_runs_hello(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("aifactory_cli-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "aifactory_cli/templates/slurm/base.sh.j2",
        "aifactory_cli/templates/slurm/lumi.sh.j2",
        "aifactory_cli/profiles/lumi.yaml",
        "aifactory_cli/profiles/jupiter.yaml",
        "aifactory_cli/profiles/local.yaml",
    ):
        assert needed in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # The wheel goes in with --no-deps; its dependencies come from the interpreter running this test
    # (a venv or the system one), appended after the new venv's own site-packages so the wheel wins.
    # (--system-site-packages reached the *base* interpreter's packages, which lack typer when the
    # suite runs from a venv.)
    (new_site,) = venv.glob("lib/python*/site-packages")
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (new_site / "outer_env.pth").write_text("".join(f"{p}\n" for p in sorted(outer)))
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--no-deps", str(wheel)], check=True, capture_output=True
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIFACTORY_") and k != "PYTHONPATH"}
    env["AIFACTORY_HOME"] = str(tmp_path / "home")
    run_dir = tmp_path / "elsewhere"  # not the checkout: the installed package must be used
    run_dir.mkdir()
    exe = str(venv / "bin" / "aifactory")
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import aifactory_cli; print(aifactory_cli.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=run_dir,
        check=True,
    ).stdout
    assert str(venv) in probe, probe
    r = subprocess.run(
        [exe, "submit", str(REPO / "examples" / "hello.yaml"), "--wait"],
        capture_output=True,
        text=True,
        env=env,
        cwd=run_dir,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    status = json.loads(
        subprocess.run(
            [exe, "status", "--json"], capture_output=True, text=True, env=env, cwd=run_dir, check=True
        ).stdout
    )
    (job,) = status["jobs"]
    assert (job["state"], job["exit_code"]) == ("COMPLETED", 0)
    r = subprocess.run(
        [exe, "render", str(REPO / "examples" / "train.yaml"), "--site", "lumi", "-A", "project_465000123"],
        capture_output=True,
        text=True,
        env=env,
        cwd=run_dir,
    )
    assert r.returncode == 0 and "--partition=standard-g" in r.stdout
