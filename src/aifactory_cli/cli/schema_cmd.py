"""`aifactory schema spec|profile|config`: print a JSON Schema (or, with --path, where it is)."""

from __future__ import annotations

import sys

import typer


def _names(incomplete: str) -> list[str]:
    from aifactory_cli.service.schemas import NAMES

    return [n for n in NAMES if n.startswith(incomplete)]


def register(app: typer.Typer) -> None:
    app.command(
        "schema",
        help="Print the JSON Schema of a job spec, a site profile or the user config, for editors "
        "(first line of a YAML file: # yaml-language-server: $schema=<path from --path>).",
    )(schema)


def schema(
    name: str = typer.Argument(..., metavar="spec|profile|config", help="Which schema.", autocompletion=_names),
    path: bool = typer.Option(False, "--path", help="Print the schema file's path instead of its text."),
) -> None:
    from aifactory_cli.service.schemas import schema_path, schema_text

    if path:
        print(schema_path(name))
    else:
        sys.stdout.write(schema_text(name))
