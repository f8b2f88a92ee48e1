"""Property tests: hostile strings in every user field that reaches the script. The rendered
script passes `bash -n`, and executed (the local site's template: no scheduler needed) it prints
the values back literally; a marker file that the strings try to create never appears. Container
binds and options reach a stand-in container runtime as exactly the words they were; a `slurm:`
value is refused or stays one #SBATCH comment line.
300 seeded examples x 6 fields each = 1800 hostile inputs per run (the real-Slurm version of this
test is in tests/real/test_concurrency_security.py)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from aifactory_cli.errors import BadInput
from aifactory_cli.sites.profile import ContainerRuntime, LoadedProfile, load_profile
from aifactory_cli.sites.render import render
from aifactory_cli.sites.resolve import Overrides, resolve
from aifactory_cli.sites.userconfig import UserConfig
from aifactory_cli.spec.model import JobSpec

MARKER = "/tmp/aif-pwned-unit"
IMAGE = "/containers/aif-test.sif"
# A stand-in container runtime: it records the words it was given (NUL-separated) and runs the
# command after `exec OPTION --bind JOBDIR --bind BIND IMAGE`, as apptainer would inside the container.
FAKE_RUNTIME = """#!/bin/bash
printf '%s\\0' "$@" > "$AIF_JOB_DIR/runtime.args"
shift 7
exec "$@"
"""
SEEDS = [
    f"$(touch {MARKER})",
    f"`touch {MARKER}`",
    f"'; touch {MARKER}; '",
    f'"; touch {MARKER} #',
    f"\ntouch {MARKER}\n",
    "*",
    "--help",
    "-rf /",
    f"${{IFS}}touch${{IFS}}{MARKER}",
    "ünïcødé ✓",
    "$HOME",
    "!!",
    f"&& touch {MARKER}",
    f"| touch {MARKER}",
    f"> {MARKER}",
    "\\",
    "'",
    '"',
    "$'\\x41'",
    "~root",
]
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), min_size=1, max_size=30)
HOSTILE = st.one_of(st.sampled_from(SEEDS), TEXT)


@pytest.fixture(autouse=True, scope="module")
def _no_stale_marker() -> None:
    Path(MARKER).unlink(missing_ok=True)  # left by an earlier failed run, it would fail every example


def _local_with_containers() -> LoadedProfile:
    loaded = load_profile("local")
    profile = loaded.profile.model_copy(update={"container": ContainerRuntime(runtime="apptainer")})
    return LoadedProfile(profile, loaded.files, loaded.merged)


def _directives(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


def _bash_n(script: str) -> None:
    proc = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr


@seed(1122)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(env_value=HOSTILE, matrix_value=HOSTILE, arg=HOSTILE, setup_value=HOSTILE, bind=HOSTILE, extra=HOSTILE)
def test_hostile_values_are_literal(
    aif_home, tmp_path_factory, env_value, matrix_value, arg, setup_value, bind, extra
) -> None:
    tmp = tmp_path_factory.mktemp("inj")
    run = (
        'python3 -c \'import json,os,sys; print(json.dumps([os.environ["E"], os.environ["M"], sys.argv[1:]]))\' '
        + shlex.quote(arg)
    )
    data = {
        "name": "inj",
        "env": {"E": env_value},
        "matrix": {"M": [matrix_value]},
        "run": run,
        "setup": "printf '%s\\n' " + shlex.quote(setup_value) + " > setup.out",
        "container": {"image": IMAGE, "bind": [bind], "options": [extra]},
    }
    spec = JobSpec.model_validate(data)
    job = resolve(spec, _local_with_containers(), UserConfig(), Overrides())
    script = render(job, "0" * 32, "00000000").script
    _bash_n(script)
    (tmp / "job.sh").write_text(script)
    (tmp / "bin").mkdir()
    (tmp / "bin" / "apptainer").write_text(FAKE_RUNTIME)
    (tmp / "bin" / "apptainer").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    env.update(SLURM_SUBMIT_DIR=str(tmp), SLURM_ARRAY_TASK_ID="0", PATH=f"{tmp / 'bin'}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(tmp / "job.sh")], cwd=tmp, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [env_value, matrix_value, [arg]]
    # a sweep element works in its own directory (elements/N): the setup's relative file is there
    assert (tmp / "elements" / "0" / "setup.out").read_text() == setup_value + "\n"
    # the container's bind and option arrive as one word each, exactly as written
    words = (tmp / "runtime.args").read_bytes().decode().split("\0")[:-1]
    assert words == ["exec", extra, "--bind", str(tmp), "--bind", bind, IMAGE, "bash", "-c", run]
    assert not Path(MARKER).exists()

    # on a Slurm site the container line passes `bash -n` too, and a `slurm:` value (sbatch reads
    # #SBATCH lines itself, no shell) is refused, or is one #SBATCH comment line and nothing more
    lumi = load_profile("lumi")
    overrides = Overrides(account="project_465000123")
    plain = render(resolve(spec, lumi, UserConfig(), overrides), "0" * 32, "00000000").script
    _bash_n(plain)
    try:
        with_slurm = JobSpec.model_validate({**data, "slurm": {"constraint": extra}})
    except ValidationError:
        assert "\n" in extra  # the only value refused on the spec: a second line
        event("slurm value refused by the spec")
        return
    try:
        script = render(resolve(with_slurm, lumi, UserConfig(), overrides), "0" * 32, "00000000").script
    except BadInput:
        event("slurm value refused on the #SBATCH line")
        return  # not a plain token
    event("slurm value rendered")
    assert not any(c in extra for c in " \n\t'\"$`;\\(){}<>#~")
    assert _directives(script) == [*_directives(plain), f"#SBATCH --constraint={extra}"]
    _bash_n(script)
