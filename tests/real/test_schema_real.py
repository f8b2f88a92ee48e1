"""The JSON Schemas on the real test bed: a spec that starts with the editor line
`# yaml-language-server: $schema=<aifactory schema spec --path>` and uses the YAML quirks the schema
allows (env numbers, `time: 0:05:00`, a matrix as a list of elements) validates against the printed
schema as an editor reads it, and runs on the bed with its values as written; a spec the schema
refuses (launcher: mpirun) is refused by submit too, before anything is sent."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tests.unit.test_schemas import editor_view

pytestmark = pytest.mark.real


def test_a_schema_valid_spec_runs_on_the_bed_and_a_refused_one_is_refused(tb, tmp_path: Path) -> None:
    r = tb("schema", "spec", "--path")
    assert r.code == 0, r.stderr
    schema_file = Path(r.stdout.strip())
    r = tb("schema", "spec")
    assert r.code == 0, r.stderr
    validator = jsonschema.Draft202012Validator(json.loads(r.stdout))
    assert json.loads(schema_file.read_text()) == validator.schema

    spec = tmp_path / "quirks.yaml"
    spec.write_text(
        f"# yaml-language-server: $schema={schema_file}\n"
        "resources: {time: 0:05:00}\n"
        "env: {UMASK: 0022, LR: 0.1}\n"
        "matrix: [{BS: 8}, {BS: 16}]\n"
        'run: echo "umask=$UMASK lr=$LR bs=$BS"\n'
    )
    assert [e.message for e in validator.iter_errors(editor_view(spec))] == []
    r = tb("submit", str(spec), "--site", "testbed", "--wait", "--timeout", "90", "--json")
    assert r.code == 0, r.stderr
    job = json.loads(r.stdout)["jobs"][0]["id"]
    logs = [tb("logs", job, "--task", str(t)) for t in (0, 1)]
    assert [x.stdout.strip() for x in logs] == ["umask=0022 lr=0.1 bs=8", "umask=0022 lr=0.1 bs=16"], logs

    bad = tmp_path / "bad.yaml"
    bad.write_text("launcher: mpirun\nrun: echo no\n")
    assert not validator.is_valid(editor_view(bad))
    r = tb("submit", str(bad), "--site", "testbed")
    assert r.code == 2 and "launcher: Input should be 'srun', 'torchrun' or 'none'" in r.stderr, r.stderr
    assert [j["name"] for j in json.loads(tb("list", "--json").stdout)["jobs"]] == ["quirks"]
