"""The shipped JSON Schemas (spec, profile, config), generated from the models by
`aifactory_cli.service.schemas`: rewrite them with `python -m aifactory_cli.schemas`."""
