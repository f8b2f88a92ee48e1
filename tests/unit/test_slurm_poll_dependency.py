"""`status` of a job that Slurm cancelled because its afterok parent failed, after squeue forgot it
(MinJobAge: 30 s on the test bed, 300 s by default): sacct alone is left, on each recorded version."""

from __future__ import annotations

import pytest
from recorded import VERSIONS, Recording

from aifactory_cli.backends.slurm import SlurmBackend
from aifactory_cli.jobs.model import Job, now_iso
from aifactory_cli.sites.profile import load_profile
from aifactory_cli.transport import CommandResult


class SacctOnly:
    """squeue has forgotten the jobs (empty answer); sacct gives the recorded rows."""

    name = "recorded"
    username = "hpcuser"

    def __init__(self, version: str) -> None:
        self.sacct = Recording(version).text("sacct_killed_dep.txt").strip()

    def run(self, command: str, **_: object) -> CommandResult:
        framed = f"\n@@AIF@@ squeue\n\n@@AIF@@ rc 0\n\n@@AIF@@ sacct\n{self.sacct}\n\n@@AIF@@ rc 0\n"
        return CommandResult(0, framed, "")


def _job(job_id: str, slurm_id: str, depends: bool) -> Job:
    extra = {"depends_on": ["1"]} if depends else {}
    return Job(id=job_id, token="t" * 8, name=job_id, site="lumi", state="PENDING", slurm_job_id=slurm_id,
               extra=extra, created_at=now_iso(), updated_at=now_iso())  # fmt: skip


@pytest.mark.parametrize("version", VERSIONS)
def test_status_says_dependency_never_satisfied_after_squeue_forgot_the_job(version: str) -> None:
    ids = Recording(version).ids("killed_dep_ids.txt")
    backend = SlurmBackend(load_profile("lumi"), SacctOnly(version), lambda: None)  # type: ignore[arg-type]
    jobs = [_job("kill0001", ids["killed"], True), _job("user0001", ids["by_user"], True)]
    got = backend.poll(jobs)
    assert (got["kill0001"].state, got["kill0001"].reason, got["kill0001"].started_at) == (
        "CANCELLED",
        "DependencyNeverSatisfied",
        None,
    )
    assert (got["user0001"].state, got["user0001"].reason) == ("CANCELLED", None)  # a person's scancel
