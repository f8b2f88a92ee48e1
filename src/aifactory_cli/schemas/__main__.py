"""`python -m aifactory_cli.schemas`: rewrite the shipped JSON Schemas from the models."""

from __future__ import annotations

import sys

from aifactory_cli.service.schemas import main

sys.exit(main())
