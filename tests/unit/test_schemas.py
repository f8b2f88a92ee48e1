"""The JSON Schemas (spec, profile, config): shipped as the models generate them, valid for every
example spec and built-in profile as an editor reads the YAML, and in agreement with the models on
documents both must refuse (and on the YAML quirks both must accept).

Rewrite the shipped schemas after a model change: `python -m aifactory_cli.schemas` (or run this file
with AIF_UPDATE_SCHEMAS=1)."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from aifactory_cli.service import schemas
from aifactory_cli.sites.profile import SiteProfile, load_profile_file
from aifactory_cli.sites.userconfig import UserConfig
from aifactory_cli.spec.model import JobSpec, load_spec
from tests.conftest import EXAMPLES, REPO, TEST_PROFILES

PROFILES = sorted((REPO / "profiles").glob("*.yaml"))
BED_PROFILES = sorted((TEST_PROFILES / "bed").glob("*.yaml"))
USER_PROFILES = [EXAMPLES / "mylumi.yaml"]
SPECS = sorted(p for p in EXAMPLES.glob("*.yaml") if p not in USER_PROFILES)


class _Yaml12(yaml.SafeLoader):
    """YAML as an editor's language server reads it (YAML 1.2 core schema): `1:00:00` and dates are
    text, `0.1` and `0022` are numbers, only true/false are booleans."""


_Yaml12.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag.rsplit(":", 1)[-1] not in ("bool", "int", "float", "timestamp")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), None)
_Yaml12.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), None)
_Yaml12.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"), None
)
_Yaml12.add_constructor("tag:yaml.org,2002:int", lambda loader, node: int(loader.construct_scalar(node), 10))


def editor_view(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_Yaml12)  # _Yaml12 is a SafeLoader


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(schemas.schema_text(name)))


def schema_errors(name: str, doc: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(name).iter_errors(doc)]


# --- shipped == generated -------------------------------------------------------------------------


@pytest.mark.parametrize("name", schemas.NAMES)
def test_shipped_schema_is_what_the_models_generate(name: str) -> None:
    generated = schemas.generated_text(name)
    path = schemas.schema_path(name)
    if os.environ.get("AIF_UPDATE_SCHEMAS"):
        path.write_text(generated, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == generated, (
        f"{path.name} differs from the models: run `python -m aifactory_cli.schemas` and commit the result"
    )


@pytest.mark.parametrize("name", schemas.NAMES)
def test_schema_is_a_valid_2020_12_schema_with_titles(name: str) -> None:
    schema = json.loads(schemas.schema_text(name))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == schemas.DRAFT
    assert schema["title"].startswith("aifactory ")
    assert schema["description"]


def test_unknown_keys_are_refused_everywhere_the_models_forbid_them() -> None:
    """Every object schema made from a model says additionalProperties: false (the models forbid extras)."""
    for name in schemas.NAMES:
        schema = json.loads(schemas.schema_text(name))
        for def_name, body in schema.get("$defs", {}).items():
            assert body.get("additionalProperties") is False, (name, def_name)
        if name != "profile":  # profile: the root only chooses between SiteProfile and SiteProfilePartial
            assert schema["additionalProperties"] is False


def test_fields_carry_descriptions() -> None:
    spec = json.loads(schemas.schema_text("spec"))
    missing = [k for k, v in spec["properties"].items() if not v.get("description")]
    assert not missing, missing
    assert "description" in spec["$defs"]["Resources"]["properties"]["time"]


def test_the_schema_follows_a_model_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated, not written by hand: a new spec field appears in the generated schema."""
    from pydantic import Field

    class Widened(JobSpec):
        colour: str = Field("blue", description="a field the shipped schema does not know")

    monkeypatch.setattr("aifactory_cli.spec.model.JobSpec", Widened)
    assert "colour" in schemas.generate("spec")["properties"]
    assert schemas.generated_text("spec") != schemas.schema_text("spec")


# --- examples and profiles validate ---------------------------------------------------------------


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_example_specs_validate(path: Path) -> None:
    load_spec(path)  # the model takes it
    assert schema_errors("spec", editor_view(path)) == []


@pytest.mark.parametrize("path", PROFILES + BED_PROFILES + USER_PROFILES, ids=lambda p: p.name)
def test_profiles_validate_as_written_and_merged(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file as written (one with `extends` may be partial) and the profile merged over what it extends."""
    monkeypatch.setenv("AIFACTORY_PROFILES", str(REPO / "profiles"))
    raw = editor_view(path)
    assert schema_errors("profile", raw) == []
    merged = load_profile_file(path).merged
    assert "extends" not in merged
    # the merged dict holds the loader's text for floats (`rate: 0.5`); an editor reads numbers
    as_editor = json.loads(json.dumps(merged), parse_float=float)
    assert schema_errors("profile", _numbers(as_editor)) == []
    if "extends" in raw:  # a partial file is checked against the whole schema only once merged
        assert not validator("profile").is_valid({k: v for k, v in raw.items() if k != "extends"})


def _numbers(node: Any) -> Any:
    """Text that YAML 1.2 reads as a float, as a float (what an editor sees in the file)."""
    if isinstance(node, dict):
        return {k: _numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_numbers(v) for v in node]
    if isinstance(node, str) and re.fullmatch(r"[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?", node):
        return float(node)
    return node


def test_a_user_config_validates() -> None:
    doc = {"default_site": "lumi", "sites": {"lumi": {"user": "jdoe", "account": "project_465000123", "persist": 60}}}
    UserConfig.model_validate(doc)
    assert schema_errors("config", doc) == []


# --- schema and model agree -----------------------------------------------------------------------

SPEC = {"name": "t", "run": "python train.py", "resources": {"nodes": 1, "gpus_per_node": 2}}


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    for dotted, value in changes.items():
        node = doc
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        if value is _DROP:
            del node[leaf]
        else:
            node[leaf] = value
    return doc


_DROP = object()

SPEC_ACCEPTED = {
    "minimal": {"run": "echo hi"},
    "env numbers and booleans (YAML 1.2: 0022, 0.1, true)": _with(SPEC, env={"UMASK": 22, "LR": 0.1, "DEBUG": True}),
    "matrix mapping of lists with numbers": _with(SPEC, matrix={"LR": [0.1, 0.01], "BS": [32, "64"]}),
    "matrix list of mappings": _with(SPEC, matrix=[{"LR": 0.1}, {"LR": 0.2, "BS": 8}]),
    "time as text": _with(SPEC, resources__time="1:00:00"),
    "time as seconds": _with(SPEC, resources__time=3600),
    "memory as a number": _with(SPEC, resources__memory=64),
    "gpus all": _with(SPEC, resources__gpus_per_node="all"),
    "gpus as quoted digits": _with(SPEC, resources__gpus_per_node="4"),
    "pack": _with(SPEC, matrix={"LR": [1, 2]}, pack=True, max_parallel=2),
    "sites overrides (partial)": _with(
        SPEC,
        container={"image": "docker://x"},
        sites={"lumi": {"resources": {"partition": "small-g"}, "container": {"bind": ["/scratch"]}}},
    ),
    "container": _with(SPEC, container={"image": "docker://x", "options": ["--rocm"]}),
    "slurm passthrough": _with(SPEC, slurm={"mail-type": "END", "overcommit": True, "nice": 10, "hint": None}),
}

SPEC_REFUSED = {
    "unknown key": _with(SPEC, colour="blue"),
    "unknown nested key": _with(SPEC, resources__gpu=2),
    "wrong type": _with(SPEC, resources__nodes="two"),
    "nodes below 1": _with(SPEC, resources__nodes=0),
    "bad launcher": _with(SPEC, launcher="mpirun"),
    "missing run": _with(SPEC, run=_DROP),
    "run not text": _with(SPEC, run=42),
    "version 2": _with(SPEC, version=2),
    "gpus neither number nor all": _with(SPEC, resources__gpus_per_node="many"),
    "bad gpu_binding": _with(SPEC, resources__gpu_binding="each"),
    "env value a mapping": _with(SPEC, env={"A": {"b": 1}}),
    "env bad name": _with(SPEC, env={"1A": "x"}),
    "matrix values not a list": _with(SPEC, matrix={"LR": 0.1}),
    "matrix empty list": _with(SPEC, matrix=[]),
    "container without image": _with(SPEC, container={"bind": ["/x"]}),
    "unknown key in a site override": _with(SPEC, sites={"lumi": {"colour": "red"}}),
    "bad enum in a site override": _with(SPEC, sites={"lumi": {"launcher": "mpirun"}}),
    "requires bad vendor": _with(SPEC, requires={"gpu_vendor": "intel"}),
    "max_parallel 0": _with(SPEC, max_parallel=0),
    "pack not a boolean": _with(SPEC, pack="sometimes"),
}


def _model_ok(model: type[BaseModel], doc: Any) -> bool:
    try:
        model.model_validate(doc)
    except ValidationError:
        return False
    return True


def _spec_model_ok(doc: dict[str, Any]) -> bool:
    """The spec loader's view: the spec, and the spec with each site's override merged."""
    from aifactory_cli.errors import SpecError
    from aifactory_cli.spec.model import LoadedSpec

    if not _model_ok(JobSpec, doc):
        return False
    loaded = LoadedSpec(JobSpec.model_validate(doc), doc, None, None)
    try:
        for site in doc.get("sites", {}):
            loaded.for_site(site)
    except SpecError:
        return False
    return True


@pytest.mark.parametrize("case", SPEC_ACCEPTED)
def test_spec_schema_and_model_both_accept(case: str) -> None:
    doc = SPEC_ACCEPTED[case]
    assert _spec_model_ok(doc), case
    assert schema_errors("spec", doc) == []


@pytest.mark.parametrize("case", SPEC_REFUSED)
def test_spec_schema_and_model_both_refuse(case: str) -> None:
    doc = SPEC_REFUSED[case]
    assert not _spec_model_ok(doc), f"the model takes '{case}'"
    assert schema_errors("spec", doc), f"the schema takes '{case}'"


PROFILE = {
    "version": 1,
    "scheduler": "slurm",
    "gpu": {"vendor": "amd", "model": "MI250X", "per_node": 8},
    "partitions": {"gpu": {"kind": "gpu", "max_time": "48:00:00"}},
}

PROFILE_REFUSED = {
    "unknown key": _with(PROFILE, colour="blue"),
    "unknown partition key": _with(PROFILE, partitions={"gpu": {"kind": "gpu", "max_nodez": 4}}),
    "missing version": _with(PROFILE, version=_DROP),
    "wrong type": _with(PROFILE, poll_interval="often"),
    "bad scheduler": _with(PROFILE, scheduler="pbs"),
    "bad gpu vendor": _with(PROFILE, gpu={"vendor": "intel", "model": "Max"}),
    "partition without kind": _with(PROFILE, partitions={"gpu": {"max_time": "1:00:00"}}),
    "bad request style": _with(PROFILE, gpu__request="gpus-per-socket"),
    "unknown ssh key": _with(PROFILE, ssh={"hostname": "x"}),
}


def test_profile_schema_and_model_both_accept_the_base() -> None:
    assert _model_ok(SiteProfile, PROFILE)
    assert schema_errors("profile", PROFILE) == []


@pytest.mark.parametrize("case", PROFILE_REFUSED)
def test_profile_schema_and_model_both_refuse(case: str) -> None:
    doc = PROFILE_REFUSED[case]
    assert not _model_ok(SiteProfile, doc), f"the model takes '{case}'"
    assert schema_errors("profile", doc), f"the schema takes '{case}'"


def test_a_partial_profile_with_extends_still_refuses_unknown_keys_and_bad_values() -> None:
    assert schema_errors("profile", {"extends": "lumi", "ssh": {"user": "jdoe"}}) == []
    assert schema_errors("profile", {"extends": "lumi", "colour": "red"})
    assert schema_errors("profile", {"extends": "lumi", "partitions": {"g": {"kind": "tpu"}}})
    assert schema_errors("profile", {"extends": 3})


CONFIG_REFUSED = {
    "unknown key": {"default_sit": "lumi"},
    "unknown site key": {"sites": {"lumi": {"acount": "x"}}},
    "wrong type": {"sites": {"lumi": {"persist": "soon"}}},
    "site settings not a mapping": {"sites": {"lumi": "jdoe"}},
}


@pytest.mark.parametrize("case", CONFIG_REFUSED)
def test_config_schema_and_model_both_refuse(case: str) -> None:
    doc = CONFIG_REFUSED[case]
    assert not _model_ok(UserConfig, doc), f"the model takes '{case}'"
    assert schema_errors("config", doc), f"the schema takes '{case}'"


# --- the command ----------------------------------------------------------------------------------


def test_schema_command_prints_the_shipped_schema_and_its_path(cli) -> None:
    for name in schemas.NAMES:
        r = cli("schema", name)
        assert r.code == 0, r.stderr
        assert json.loads(r.stdout) == json.loads(schemas.schema_text(name))
    r = cli("schema", "spec", "--path")
    assert r.code == 0, r.stderr
    assert Path(r.stdout.strip()) == schemas.schema_path("spec")
    assert Path(r.stdout.strip()).is_file()


def test_schema_command_refuses_an_unknown_name(cli) -> None:
    r = cli("schema", "job")
    assert r.code == 2
    assert "no schema named 'job'" in r.stderr and "spec, profile, config" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
