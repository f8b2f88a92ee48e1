"""One task of a multi-node job fails at once while the others would wait for it (as the other ranks
of a DDP job wait in a collective for a rank that died): the job ends FAILED within seconds, not at
its time limit. On Slurm the launch steps run with `srun --kill-on-bad-exit=1`; the local site's
launcher does the same itself. Checked with `launcher: srun` and `launcher: torchrun`, as LUMI and
as JUPITER on the test bed, and on the local site.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime

import pytest

from tests.conftest import REPO
from tests.real.bedjobs import TORCH_VENV, Submitted, bed_env, submit_all

pytestmark = pytest.mark.real
PROGRAM = REPO / "tests" / "data" / "ddp" / "fail_on_node1.py"
SLEEP_S = 240  # what the surviving tasks would wait without the kill; the time limit is 10 minutes


@dataclass(frozen=True)
class Case:
    site: str
    account: str | None
    launcher: str

    @property
    def name(self) -> str:
        return f"{self.site}-{self.launcher}"

    def spec(self) -> str:
        run = "python3 fail.py" if self.launcher == "srun" else "fail.py"  # torchrun: what follows it
        if self.site == "local":  # CPU tasks (torchrun: one worker per node)
            resources = "nodes: 2, tasks_per_node: 2" if self.launcher == "srun" else "nodes: 2"
            modules = ""
        else:  # fake GPUs on the bed: 2 per node, one rank each
            resources = "nodes: 2, gpus_per_node: 2"
            modules = "modules: [pytorch/2.13.0-cpu]\n"
        return (
            f"name: fail-{self.name}\nresources: {{{resources}, time: 10m}}\n{modules}"
            f"env: {{FAIL_TEST_SLEEP: '{SLEEP_S}'}}\nrun: {run}\nlauncher: {self.launcher}\nupload: [fail.py]\n"
        )


CASES = [
    Case("lumi-bed", "project_465000001", "srun"),
    Case("jupiter-bed", "exalab", "torchrun"),
    Case("local", None, "srun"),
    Case("local", None, "torchrun"),
]


@pytest.fixture(scope="module")
def failed_jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Submitted]:
    if not (TORCH_VENV / ".testbed-installed").is_file():
        pytest.fail(f"no PyTorch in {TORCH_VENV}: tests/testbed/start.sh installs it (log: /tmp/testbed/log/torch.out)")
    tmp = tmp_path_factory.mktemp("rankfail")
    shutil.copy(PROGRAM, tmp / "fail.py")
    subs = []
    for case in CASES:
        (tmp / f"{case.name}.yaml").write_text(case.spec())
        args = [f"{case.name}.yaml", *(["-A", case.account] if case.account else [])]
        subs.append(Submitted(case.name, case.site, args))
    env = bed_env(tmp, extra_path=str(TORCH_VENV / "bin"))  # the local site's torchrun
    return {s.case: s for s in submit_all(subs, env, tmp, wait_s=SLEEP_S - 60)}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_failed_task_ends_the_whole_job_at_once(failed_jobs: dict[str, Submitted], case: Case) -> None:
    sub = failed_jobs[case.name]
    assert sub.job, sub.explain()
    assert sub.job["state"] == "FAILED" and sub.job["exit_code"] not in (None, 0), sub.explain()
    started, ended = (datetime.fromisoformat(sub.job[k]) for k in ("started_at", "ended_at"))
    assert (ended - started).total_seconds() < SLEEP_S / 2, sub.explain()
    assert "node 1: failing now" in sub.text("stderr.log"), sub.explain()
    assert "nobody stopped me" not in sub.text("stdout.log"), sub.explain()
