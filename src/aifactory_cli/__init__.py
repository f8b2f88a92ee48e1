"""aifactory: one portable job file, run on the EuroHPC supercomputers over SSH and Slurm.

From Python (`import aifactory_cli as aif`): `aif.submit`, `aif.jobs`, `aif.get`, `aif.plan`,
`aif.render`, the `aif.Job` they return and the error hierarchy (`aif.BadInput`, ...); see
`aifactory_cli.api`. The names are loaded on first use, so importing the package stays cheap (no
pydantic, Jinja or SSH stack until a call needs them), and the layers below that import the package
for `__version__` do not depend on the API. Type checkers read the names from `__init__.pyi`.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

_API = ("Job", "Task", "PlanRow", "SpecLike", "submit", "get", "plan", "render")
_ERRORS = (
    "AifactoryError",
    "BadInput",
    "SpecError",
    "ProfileError",
    "ConfigError",
    "LimitError",
    "SubmitRejected",
    "RemoteError",
    "HostKeyError",
    "AuthError",
    "NotFound",
    "WaitTimeout",
    "StoreError",
    "LocalWriteError",
)

__all__ = [
    "AifactoryError",
    "AuthError",
    "BadInput",
    "ConfigError",
    "HostKeyError",
    "Job",
    "LimitError",
    "LocalWriteError",
    "NotFound",
    "PlanRow",
    "ProfileError",
    "RemoteError",
    "SpecError",
    "SpecLike",
    "StoreError",
    "SubmitRejected",
    "Task",
    "WaitTimeout",
    "__version__",
    "get",
    "jobs",
    "plan",
    "render",
    "submit",
]


class _JobsPackage(types.ModuleType):
    """`aifactory_cli.jobs` is both a subpackage (the job records and store) and the API's
    `aif.jobs(site=None, state=None)`: the import system sets the package attribute `jobs` to the
    subpackage whenever it is first imported, so the subpackage itself is made callable."""

    def __call__(self, site: str | None = None, state: str | list[str] | None = None) -> Any:
        return importlib.import_module("aifactory_cli.api").jobs(site=site, state=state)


def _callable_jobs_package() -> None:
    module = importlib.import_module("aifactory_cli.jobs")  # an empty __init__: nothing heavy
    if not isinstance(module, _JobsPackage):
        module.__class__ = _JobsPackage


_callable_jobs_package()


def __getattr__(name: str) -> Any:
    if name in _API:
        module = importlib.import_module("aifactory_cli.api")
    elif name in _ERRORS:
        module = importlib.import_module("aifactory_cli.errors")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(module, name)
    setattr(sys.modules[__name__], name, value)  # looked up once
    return value
