"""JSON Schemas of the job spec, the site profile and the user config, for editors (the YAML language
server reads `# yaml-language-server: $schema=...`).

The schemas are generated from the pydantic models (`generate`), with the few changes the YAML side
needs, and shipped as files in `aifactory_cli/schemas/` (`schema_text` reads them: printing one imports
no model). A unit test fails when a shipped file differs from what the models generate; rewrite them
with `python -m aifactory_cli.schemas`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aifactory_cli.errors import BadInput

NAMES = ("spec", "profile", "config")
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
DRAFT = "https://json-schema.org/draft/2020-12/schema"

# values the spec loader turns into text (env and matrix values): an editor reads `LR: 0.1` or
# `UMASK: 0022` as a number, and must not flag it
_SCALAR: dict[str, Any] = {"type": ["string", "number", "boolean"]}
_ENV_NAME = {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}


def schema_path(name: str) -> Path:
    """The shipped schema file of `name` (spec, profile or config)."""
    if name not in NAMES:
        raise BadInput(f"no schema named '{name}'", f"the schemas are: {', '.join(NAMES)}")
    return SCHEMA_DIR / f"{name}.schema.json"


def schema_text(name: str) -> str:
    """The shipped JSON Schema of `name`, as text."""
    return schema_path(name).read_text(encoding="utf-8")


# --- generating them from the models ------------------------------------------------------------


def generate(name: str) -> dict[str, Any]:
    """The JSON Schema of `name`, generated from its pydantic model."""
    schema_path(name)  # the name check
    if name == "spec":
        return _spec_schema()
    if name == "profile":
        return _profile_schema()
    return _config_schema()


def generated_text(name: str) -> str:
    return json.dumps(generate(name), indent=2, ensure_ascii=False) + "\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema as the models generate it; the files written."""
    written = []
    for name in NAMES:
        path = directory / f"{name}.schema.json"
        path.write_text(generated_text(name), encoding="utf-8")
        written.append(path)
    return written


def _at(node: dict[str, Any], *keys: str) -> dict[str, Any]:
    """node[k1][k2]...: a KeyError when a model changed under a patch below (the schema test fails)."""
    for key in keys:
        node = node[key]
    return node


def _header(schema: dict[str, Any], title: str, description: str) -> dict[str, Any]:
    return {"$schema": DRAFT, "title": title, "description": description, **schema}


def _partial(node: Any, renamed: dict[str, str]) -> Any:
    """A copy of `node` with no `required` anywhere and every `$ref` to a def in `renamed` pointing at
    its partial copy: a fragment merged over a whole document (a `sites:` override, a profile that
    `extends` another) may leave out what the whole must have."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("properties", "$defs") and isinstance(value, dict):  # names, not keywords
                out[key] = {name: _partial(sub, renamed) for name, sub in value.items()}
                continue
            if key == "required":
                continue
            if key == "$ref" and isinstance(value, str) and value.removeprefix("#/$defs/") in renamed:
                out[key] = "#/$defs/" + renamed[value.removeprefix("#/$defs/")]
            else:
                out[key] = _partial(value, renamed)
        return out
    if isinstance(node, list):
        return [_partial(v, renamed) for v in node]
    return node


def _refs_and_required(node: Any) -> tuple[set[str], bool]:
    refs: set[str] = set()
    required = False
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("properties", "$defs") and isinstance(value, dict):  # names, not keywords
                value = list(value.values())
            if key == "required" and isinstance(value, list) and value:
                required = True
            elif key == "$ref" and isinstance(value, str):
                refs.add(value.removeprefix("#/$defs/"))
            else:
                sub, req = _refs_and_required(value)
                refs |= sub
                required = required or req
    elif isinstance(node, list):
        for value in node:
            sub, req = _refs_and_required(value)
            refs |= sub
            required = required or req
    return refs, required


def _add_partials(defs: dict[str, Any]) -> dict[str, str]:
    """Add `<Name>Partial` beside every def that requires a field, itself or in a def it holds."""
    facts = {name: _refs_and_required(d) for name, d in defs.items()}
    partial = {name for name, (_, req) in facts.items() if req}
    while True:
        more = {name for name, (refs, _) in facts.items() if refs & partial} - partial
        if not more:
            break
        partial |= more
    renamed = {name: f"{name}Partial" for name in sorted(partial)}
    for name in sorted(partial):
        defs[renamed[name]] = _partial(defs[name], renamed)
    return renamed


def _spec_schema() -> dict[str, Any]:
    from aifactory_cli.spec.model import JobSpec

    schema = JobSpec.model_json_schema()
    props = schema["properties"]
    defs = schema["$defs"]
    _at(props, "env")["additionalProperties"] = _SCALAR
    _at(props, "env")["propertyNames"] = _ENV_NAME
    matrix = _at(props, "matrix")
    del matrix["anyOf"]
    matrix["oneOf"] = [
        {
            "type": "object",
            "description": "{KEY: [values]}: every combination",
            "propertyNames": _ENV_NAME,
            "additionalProperties": {"type": "array", "items": _SCALAR, "minItems": 1},
        },
        {
            "type": "array",
            "description": "[{KEY: value}, ...]: exactly these elements",
            "minItems": 1,
            "items": {
                "type": "object",
                "propertyNames": _ENV_NAME,
                "additionalProperties": _SCALAR,
                "minProperties": 1,
            },
        },
    ]
    gpus = _at(defs, "Resources", "properties", "gpus_per_node")
    gpus["anyOf"] = [
        {"type": "integer", "minimum": 0},
        {"const": "all", "type": "string"},
        {"type": "string", "pattern": "^[0-9]+$"},
    ]
    _at(props, "run")["minLength"] = 1
    # sites.<site>: any spec field but `sites`, merged over the spec, so nothing is required there
    renamed = _add_partials(defs)
    override = _partial({k: v for k, v in schema.items() if k not in ("$defs", "title")}, renamed)
    del override["properties"]["sites"]
    override["description"] = "spec fields for this site, merged over the spec's own"
    defs["SiteOverride"] = override
    _at(props, "sites")["additionalProperties"] = {"$ref": "#/$defs/SiteOverride"}
    del schema["title"]
    return _header(schema, "aifactory job spec", str(schema.get("description", "")))


def _profile_schema() -> dict[str, Any]:
    from aifactory_cli.sites.profile import SiteProfile

    schema = SiteProfile.model_json_schema()
    defs = schema.pop("$defs")
    defs["SiteProfile"] = schema
    _add_partials(defs)
    extends = {"type": "string", "description": "the site this profile builds on (its fields merged under these)"}
    _at(defs, "SiteProfilePartial", "properties")["extends"] = extends
    defs["SiteProfilePartial"]["required"] = ["extends"]
    return {
        "$schema": DRAFT,
        "title": "aifactory site profile",
        "description": schema.get("description", ""),
        "$defs": defs,
        # a profile that `extends` another is merged over it before it is checked: it may be partial
        "if": {"required": ["extends"]},
        "then": {"$ref": "#/$defs/SiteProfilePartial"},
        "else": {"$ref": "#/$defs/SiteProfile"},
    }


def _config_schema() -> dict[str, Any]:
    from aifactory_cli.sites.userconfig import UserConfig

    schema = UserConfig.model_json_schema()
    del schema["title"]
    return _header(schema, "aifactory user config", str(schema.get("description", "")))


def main(argv: list[str] | None = None) -> int:
    """`python -m aifactory_cli.schemas`: rewrite the shipped schemas from the models."""
    for path in write_schemas():
        print(f"wrote {path}")
    return 0
