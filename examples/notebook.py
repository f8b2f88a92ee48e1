"""aifactory from Python, cell by cell (as in a Jupyter notebook): submit, wait, read the logs,
fetch a result, and cancel a job. Runs on the embedded `local` site as is:

    python examples/notebook.py                                # the local site
    python examples/notebook.py lumi project_465000123         # a site and its account

Only the public API (`import aifactory_cli as aif`); it passes `mypy --strict`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import aifactory_cli as aif

# %% notices (uploads, cancels, warnings) come through the `aifactory_cli` logger
logging.basicConfig(format="  [%(name)s] %(message)s")
logging.getLogger("aifactory_cli").setLevel(logging.INFO)
site = sys.argv[1] if len(sys.argv) > 1 else "local"
account = sys.argv[2] if len(sys.argv) > 2 else None
here = Path(__file__).resolve().parent

# %% a spec file: examples/hello.yaml
hello = aif.submit(here / "hello.yaml", site=site, account=account)
print(f"submitted {hello.name} as {hello.id} ({hello.ref})")
print(f"{hello.id}: {hello.wait(timeout=300)}, exit code {hello.exit_code}")
print("stdout:", hello.logs().strip())

# %% a spec as a dict (written nowhere), with a result to fetch
spec = {
    "name": "notebook-result",
    "resources": {"time": "5m"},
    "run": "mkdir -p results && echo 42 > results/answer.txt && echo wrote results/answer.txt",
    "download": ["results/*.txt"],
}
result = aif.submit(spec, site=site, account=account)
state = result.wait(timeout=300)
print(f"{result.id}: {state}; logs: {result.logs().strip()}")
for path in result.fetch(dest=Path("notebook-results")):
    print(f"fetched {path}: {path.read_text().strip()}")

# %% a second job, cancelled while it waits or runs
long = aif.submit({"name": "notebook-long", "resources": {"time": "10m"}, "run": "sleep 300"}, site=site, account=account)
print(f"{long.id} is {long.state}; cancelling")
print(f"{long.id}: {long.cancel()}")

# %% the jobs this notebook made, and errors as exceptions with a message and a hint
for job in aif.jobs(site=site):
    print(f"  {job.id} {job.name:16} {job.state}")
try:
    aif.get("no-such-job")
except aif.NotFound as exc:
    print(f"NotFound: {exc.message} (hint: {exc.hint})")
