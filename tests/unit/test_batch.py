"""Several commands in one round trip (`transport.batch`), run through a real bash, and the users
of it that read job dirs: `sync`'s listing and the lookup of interrupted submissions."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from aifactory_cli.jobs import jobdir
from aifactory_cli.transport import batch

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"


def _bash(command: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=cwd, env=env, timeout=30)


def test_sections_keep_each_output_and_exit_code() -> None:
    command = batch.command(
        {
            "two-lines": "echo hi; echo there",
            "no-newline": "printf x; false",
            "empty": "true",
            "stderr": "echo oops >&2; exit_not_found 2>/dev/null",
            "blank-lines": "printf '\\n\\nlast\\n\\n'",
        }
    )
    result = _bash("echo 'Welcome to the login node'; " + command)  # a chatty login shell
    assert result.returncode == 0 and result.stderr == "oops\n"
    got = batch.split(result.stdout)
    assert [(s.name, s.output, s.rc) for s in got] == [
        ("two-lines", "hi\nthere\n", 0),
        ("no-newline", "x", 1),
        ("empty", "", 0),
        ("stderr", "", 127),
        ("blank-lines", "\n\nlast\n\n", 0),
    ]
    assert not got[1].ok and got[0].ok


def test_a_section_cut_off_is_missing_and_names_are_plain_tokens() -> None:
    out = _bash(batch.command({"a": "echo 1", "b": "echo 2"})).stdout
    cut = out[: out.index("\n@@AIF@@ rc", out.index("@@AIF@@ b"))]
    assert list(batch.sections(cut)) == ["a"]
    assert batch.command({}) == "true"
    with pytest.raises(ValueError, match="plain token"):
        batch.command({"a b": "true"})


def test_records_of_a_batch_run_in_a_loop() -> None:
    each = batch.command({"item": "echo $i", "square": "echo $((i * i))"})
    out = _bash(f"for i in 2 3; do {each}; done").stdout
    assert [(r["item"].output, r["square"].output) for r in batch.records(out, first="item")] == [
        ("2\n", "4\n"),
        ("3\n", "9\n"),
    ]


def test_sync_listing_reads_every_job_dir_back(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    done = jobs / "train-a1b2c3d4"
    prepared = jobs / "hello-00000000"
    for d in (done, prepared, jobs / "not-a-job", jobs / "foreign"):
        d.mkdir(parents=True)
    meta = {"token": "t" * 32, "id": "a1b2c3d4", "name": "train"}
    (done / jobdir.META).write_text(json.dumps(meta))
    (done / jobdir.SLURM_JOB_ID).write_text("42\n")
    (done / jobdir.exit_code_name()).write_text("3\n")
    (done / jobdir.SCRIPT).write_text("#!/bin/bash\necho @@AIF@@-like but not a marker line\n")
    (prepared / jobdir.META).write_text(json.dumps({"token": "u" * 32}))
    (jobs / "foreign" / jobdir.META).write_text('["not aifactory metadata"]')
    result = _bash(jobdir.listing_command("jobs/*"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = sorted(jobdir.parse_listing(result.stdout), key=lambda r: r["workdir"])
    assert [Path(r["workdir"]).name for r in records] == ["hello-00000000", "train-a1b2c3d4"]
    first, second = records
    assert (first["slurm_job_id"], first["exit_code"], first["script"]) == (None, None, "")
    assert Path(second["workdir"]).is_absolute() and second["meta"] == meta
    assert (second["slurm_job_id"], second["exit_code"]) == ("42", 3)
    assert second["script"] == (done / jobdir.SCRIPT).read_text()
