"""`sites check` on each Slurm bed records what its Slurm is and can do (version, squeue
--only-job-state, JSON output, JobRequeue) in the job store, and status's poll of a running job uses
it: squeue --only-job-state on 24.11 once the check has run, today's squeue before it and on 22.05;
the job's state, start and exit code are the same either way."""

from __future__ import annotations

import functools
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.real.conftest import TESTBED_ACCOUNT
from tests.real.slurmbeds import SlurmBed

pytestmark = pytest.mark.real


def _poll(site: str, job_id: str) -> tuple[str, object]:
    """status's poll of one job, in-process, and the squeue line it sent to the bed."""
    from aifactory_cli.service.session import Service

    with Service() as svc:
        backend = svc.backend(site)
        run = backend.transport.run
        sent: list[str] = []

        def recording(command, **kw):  # type: ignore[no-untyped-def]
            sent.append(str(command))
            return run(command, **kw)

        backend.transport.run = recording  # type: ignore[method-assign]
        job = svc.store.find(job_id)
        update = backend.poll([job])[job.id]
    (status,) = [c for c in sent if "squeue" in c]
    return status, update


def test_sites_check_records_the_slurm_and_status_uses_it(
    tb, tmp_path: Path, slurm_bed: SlurmBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = slurm_bed.extra()
    tb = functools.partial(tb, env=extra) if extra else tb
    for key, value in {**extra, "AIFACTORY_ACCOUNT": TESTBED_ACCOUNT,
                       "AIFACTORY_SSH_CONFIG": str(tmp_path / "ssh_config_empty")}.items():  # fmt: skip
        monkeypatch.setenv(key, value)  # the in-process polls reach the bed as the CLI does
    site = slurm_bed.testbed
    spec = tmp_path / "facts.yaml"
    spec.write_text("name: facts\nresources: {time: 5m}\nrun: sleep 120\n")
    r = tb("submit", str(spec), "--site", site)
    assert r.code == 0, r.stderr
    job_id = r.stdout.strip()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            (shown,) = json.loads(tb("status", job_id, "--json").stdout)["jobs"]
            if shown["state"] == "RUNNING" and shown.get("started_at"):
                break
            time.sleep(3)
        assert shown["state"] == "RUNNING", shown

        before, update = _poll(site, job_id)  # `sites check` never ran: today's squeue
        assert "--only-job-state" not in before and "%i|%T|%r|%S" in before
        assert update.state == "RUNNING"  # type: ignore[attr-defined]

        check = tb("sites", "check", site, "--json")
        rows = {c["check"]: c for c in json.loads(check.stdout)["checks"]}
        live = subprocess.run([*slurm_bed.ssh, "sinfo --version"], capture_output=True, text=True).stdout.split()[-1]
        assert live.startswith(slurm_bed.version)
        newer = slurm_bed.version == "24.11"
        detail = rows["slurm features"]["detail"]
        assert detail == (
            f"Slurm {live}; squeue --only-job-state: {'yes' if newer else 'no'}; JSON output: yes; "
            "requeue (JobRequeue): yes (recorded)"
        ), detail

        from aifactory_cli.jobs.store import Store

        store = Store()
        try:
            facts = store.site_facts(site)
        finally:
            store.close()
        assert facts is not None and facts.slurm_version == live and facts.client_version == live
        assert (facts.only_job_state, facts.json_output, facts.requeue) == (newer, True, True)

        after, update = _poll(site, job_id)
        assert ("--only-job-state" in after) is newer, after
        assert update.state == "RUNNING" and update.started_at == shown["started_at"]  # type: ignore[attr-defined]
        assert update.exit_code is None and update.reason is None  # type: ignore[attr-defined]
    finally:
        tb("cancel", job_id)
