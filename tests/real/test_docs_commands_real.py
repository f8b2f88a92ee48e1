"""Docs that run: every `aifactory ...` command printed in README.md and docs/*.md, run as printed.

The commands run in order, in one temporary AIFACTORY_HOME, from a directory that has the
repository's `examples/` (as from the repository root), through `bash -c` (the CI block uses `>`
and `$(...)`). The remote sites they name (lumi, jupiter, ...) are the test bed's: each
tests/profiles/bed/<site>-bed.yaml is installed as the user profile `<site>.yaml`, which extends the
built-in site of that name and points it at the bed's sshd and Slurm; `lumi24-bed` (the Slurm 24.11
bed) keeps its name. The README's config.yaml
block is the user's config. What is not run exactly as printed is listed, with the reason, in
tests/doc_commands.py (PREFIXES_NOT_RUN, DRY_RUN_INSTEAD). A command fails the test when its exit
code is not the documented one (0, or `# exits N` in the doc).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.doc_commands import REPO, all_commands, as_run, config_block, machine_has_gpus
from tests.real.bedjobs import BED_PROFILES, bed_env
from tests.real.conftest import TESTBED_USER

pytestmark = pytest.mark.real

README_ACCOUNT, BED_LUMI_ACCOUNT = "project_465000123", "project_465000001"


def _docs_env(tmp: Path) -> tuple[dict[str, str], Path]:
    env = bed_env(tmp)
    profiles = tmp / "site-profiles"
    profiles.mkdir()
    for bed in BED_PROFILES.glob("*-bed.yaml"):
        (profiles / f"{bed.name.removesuffix('-bed.yaml')}.yaml").write_text(bed.read_text())
    # the README's 24.11 bed example names its profile as the bed's docs do (the bed must be up)
    bed24 = BED_PROFILES.parent / "bed24" / "lumi24-bed.yaml"
    (profiles / bed24.name).write_text(bed24.read_text())
    env["AIFACTORY_PROFILES"] = str(profiles)
    env["AIFACTORY_SSH_USER"] = TESTBED_USER  # the config block's `user: jdoe` is not a bed login
    home = Path(env["AIFACTORY_HOME"])
    home.mkdir(parents=True)
    config = config_block()
    assert config, "README.md lost its config.yaml block"
    # the README's project is an example; the bed's LUMI has the projects of tests/testbed/sites.sh
    assert README_ACCOUNT in config
    (home / "config.yaml").write_text(config.replace(README_ACCOUNT, BED_LUMI_ACCOUNT))
    # `aifactory` on PATH is this checkout's code, whatever is installed
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "aifactory"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m aifactory_cli "$@"\n')
    shim.chmod(0o755)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    work = tmp / "work"  # the repository root as the docs use it, without writing into the checkout
    work.mkdir()
    (work / "examples").symlink_to(REPO / "examples")
    return env, work


def test_every_documented_command_runs(tmp_path: Path) -> None:
    env, work = _docs_env(tmp_path)
    gpus = machine_has_gpus()
    commands = all_commands()
    assert len(commands) >= 20
    failures = []
    started = time.monotonic()
    for cmd in commands:
        line = as_run(cmd)
        expect = 0 if (cmd.gpu_qualified and gpus) else cmd.expect
        t0 = time.monotonic()
        proc = subprocess.run(
            ["bash", "-c", line],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        shown = line if line == cmd.text else f"{line}    (printed: {cmd.text})"
        print(f"{cmd.where():18} exit {proc.returncode:<3} (want {expect}) {time.monotonic() - t0:5.1f} s  {shown}")
        if proc.returncode != expect:
            failures.append(
                f"{cmd.where()}: `{line}` exited {proc.returncode}, documented {expect}\n{proc.stderr[-1500:]}"
            )
    print(f"{len(commands)} documented commands in {time.monotonic() - started:.1f} s")
    assert not failures, "\n\n".join(failures)
