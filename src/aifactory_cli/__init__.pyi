# What type checkers see of `import aifactory_cli as aif`: the names __init__.py loads on first use
# (its module-level __getattr__). Keep __all__ equal to __init__.py's (tests/unit/test_api.py checks).
from aifactory_cli.api import Job as Job
from aifactory_cli.api import PlanRow as PlanRow
from aifactory_cli.api import SpecLike as SpecLike
from aifactory_cli.api import Task as Task
from aifactory_cli.api import get as get
from aifactory_cli.api import jobs as jobs
from aifactory_cli.api import plan as plan
from aifactory_cli.api import render as render
from aifactory_cli.api import submit as submit
from aifactory_cli.errors import AifactoryError as AifactoryError
from aifactory_cli.errors import AuthError as AuthError
from aifactory_cli.errors import BadInput as BadInput
from aifactory_cli.errors import ConfigError as ConfigError
from aifactory_cli.errors import HostKeyError as HostKeyError
from aifactory_cli.errors import LimitError as LimitError
from aifactory_cli.errors import LocalWriteError as LocalWriteError
from aifactory_cli.errors import NotFound as NotFound
from aifactory_cli.errors import ProfileError as ProfileError
from aifactory_cli.errors import RemoteError as RemoteError
from aifactory_cli.errors import SpecError as SpecError
from aifactory_cli.errors import StoreError as StoreError
from aifactory_cli.errors import SubmitRejected as SubmitRejected
from aifactory_cli.errors import WaitTimeout as WaitTimeout

__version__: str

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
