"""What `sites check` learns about a site's Slurm (its version, `squeue --only-job-state`, JSON output,
JobRequeue), parsed from the check's output recorded on both test beds; kept in the job store
(schema 3); and the status poll that uses it: squeue --only-job-state for running jobs on a site whose
Slurm has it, today's squeue everywhere else (and where `sites check` never ran)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from recorded import VERSIONS, Recording, since

from aifactory_cli.backends.slurm import SlurmBackend
from aifactory_cli.jobs import store as store_mod
from aifactory_cli.jobs.model import Job, now_iso
from aifactory_cli.jobs.store import Store
from aifactory_cli.scheduler.slurm_site import SiteFacts, parse_site_facts, slurm_version, split_sections
from aifactory_cli.service.sites import runs_check
from aifactory_cli.sites.profile import SlurmRuns, load_profile
from aifactory_cli.transport import CommandResult


def _facts(version: str) -> SiteFacts:
    return parse_site_facts(split_sections(Recording(version).text("sites_check.txt")), checked_at="t")


@pytest.mark.parametrize("version", VERSIONS)
def test_the_recorded_check_gives_the_version_and_features(version: str) -> None:
    facts = _facts(version)
    full = Recording(version).text("version.txt").strip()
    assert facts.slurm_version == full and facts.client_version == full
    assert facts.only_job_state is since(version, "23.11")  # 22.05: "unrecognized option"
    assert facts.json_output is True  # both beds have Debian's data_parser plugins
    assert facts.requeue is True  # slurm.conf default JobRequeue=1 on both beds


def test_a_probe_that_could_not_reach_slurm_says_unknown_not_no() -> None:
    text = (
        Recording("22.05")
        .text("sites_check.txt")
        .replace("squeue: unrecognized option '--only-job-state'", "squeue: error: Unable to contact slurm controller")
    )
    facts = parse_site_facts(split_sections(text.replace("JobRequeue              = 1", "JobRequeue = 0")))
    assert facts.only_job_state is None
    assert facts.requeue is False


def test_versions_are_read_from_each_form_slurm_prints() -> None:
    assert slurm_version("slurm-wlm 22.05.8") == "22.05.8"
    assert slurm_version("slurm 24.11.5") == "24.11.5"
    assert slurm_version("SLURM_VERSION = 23.02.7") == "23.02.7"
    assert slurm_version("sbatch: command not found") is None


# --- the store ---------------------------------------------------------------------------------------


def test_the_store_keeps_the_newest_facts_per_site(aif_home: Path) -> None:
    store = Store()
    try:
        assert store.site_facts("lumi") is None  # never checked
        store.save_site_facts("lumi", _facts("22.05"))
        store.save_site_facts("lumi", _facts("24.11"))
        store.save_site_facts("jupiter", SiteFacts(slurm_version="23.02.7", only_job_state=False))
        assert store.site_facts("lumi") == _facts("24.11")
        jupiter = store.site_facts("jupiter")
        assert jupiter is not None and jupiter.slurm_version == "23.02.7" and jupiter.requeue is None
    finally:
        store.close()


def test_a_schema_2_store_gets_the_facts_table_and_keeps_its_jobs(aif_home: Path) -> None:
    Store().close()
    (path,) = aif_home.rglob("jobs.sqlite3")
    conn = sqlite3.connect(path)  # as aifactory with schema 2 left it
    conn.execute("DROP TABLE site_facts")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.execute(
        "INSERT INTO jobs (id, token, name, site, state, created_at, updated_at) VALUES"
        " ('cccc3333', 'tok', 'j', 'lumi', 'RUNNING', '2026-01-01', '2026-01-01')"
    )
    conn.commit()
    conn.close()
    store = Store()
    try:
        assert store_mod.SCHEMA_VERSION == 3
        assert store.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "3"
        assert [j.id for j in store.query()] == ["cccc3333"] and store.site_facts("lumi") is None
    finally:
        store.close()


def test_facts_stored_by_a_newer_aifactory_are_read_without_its_new_keys() -> None:
    data = {"slurm_version": "25.11.1", "only_job_state": True, "expediting_state": True}
    assert SiteFacts.from_dict(data) == SiteFacts(slurm_version="25.11.1", only_job_state=True)


# --- the consumer: status's squeue ---------------------------------------------------------------------


class Recorded:
    """A transport that answers every command with `status_light.txt` (24.11: squeue
    --only-job-state and sacct for a running job) and keeps what it was asked."""

    name = "recorded"
    username = "hpcuser"

    def __init__(self) -> None:
        self.commands: list[str] = []

    def run(self, command: str, **_: object) -> CommandResult:
        self.commands.append(command)
        return CommandResult(0, Recording("24.11").text("status_light.txt"), "")


def _job(state: str, array_size: int = 0) -> Job:
    sid = Recording("24.11").ids("light_ids.txt")["running"]
    return Job(id="dddd4444", token="t" * 8, name="j", site="lumi", state=state, slurm_job_id=sid,
               array_size=array_size, created_at=now_iso(), updated_at=now_iso())  # fmt: skip


@pytest.mark.parametrize(
    ("facts", "state", "array_size", "light"),
    [
        (_facts("24.11"), "RUNNING", 0, True),
        (None, "RUNNING", 0, False),  # `sites check` never ran: today's squeue
        (_facts("22.05"), "RUNNING", 0, False),  # 22.05 has no --only-job-state
        (_facts("24.11"), "PENDING", 0, False),  # a pending job's reason and expected start are needed
        (_facts("24.11"), "RUNNING", 4, False),  # an array's pending elements too
    ],
    ids=["24.11-running", "never-checked", "22.05-running", "24.11-pending", "24.11-array"],
)
def test_status_asks_squeue_for_the_state_only_where_the_site_has_it(
    facts: SiteFacts | None, state: str, array_size: int, light: bool
) -> None:
    transport = Recorded()
    backend = SlurmBackend(load_profile("lumi"), transport, lambda: facts)  # type: ignore[arg-type]
    job = _job(state, array_size)
    update = backend.poll([job])[job.id]
    assert ("--only-job-state" in transport.commands[0]) is light
    if not array_size:  # the recorded answer of 24.11's light squeue: the start comes from sacct
        assert update.state == "RUNNING" and update.reason is None and update.exit_code is None
        assert update.started_at is not None and update.started_at.startswith("2026-")


# --- the profile's `runs:` ---------------------------------------------------------------------------


def test_jupiter_says_its_compute_nodes_run_psslurm_and_sites_check_shows_it() -> None:
    jupiter = load_profile("jupiter").profile
    assert jupiter.runs is not None and jupiter.runs.compute == "psslurm" and jupiter.runs.slurm_version is None
    assert jupiter.runs.source and "SLURM Backend Change" in jupiter.runs.source
    ((name, status, detail),) = runs_check(jupiter, _facts("24.11"))  # no version to compare
    assert (name, status) == ("compute nodes", "info") and detail.startswith("run psslurm (profile: JUPITER docs")
    assert load_profile("lumi").profile.runs is None and runs_check(load_profile("lumi").profile, _facts("22.05")) == []


@pytest.mark.parametrize(
    ("said", "status"), [("24.11", "ok"), ("24.11.5", "ok"), ("24.1", "info"), ("24.05", "info"), ("22.05", "info")]
)
def test_a_version_the_profile_names_is_compared_by_its_parts(said: str, status: str) -> None:
    profile = load_profile("lumi").profile.model_copy(update={"runs": SlurmRuns(slurm_version=said)})
    assert runs_check(profile, _facts("24.11")) == [("slurm version", status, f"profile {said}, site 24.11.5")]


# --- `sites check` itself, on a site that answers with the recorded check -----------------------------


class RecordedCheck:
    """A site that answers every command with the check recorded on `version`'s bed."""

    name = "recorded"
    username = "hpcuser"

    def __init__(self, version: str) -> None:
        self.version = version

    def run(self, command: str, **_: object) -> CommandResult:
        return CommandResult(0, Recording(self.version).text("sites_check.txt"), "")

    def read_bytes(self, path: str, offset: int = 0) -> bytes:
        return b""


@pytest.mark.parametrize("version", VERSIONS)
def test_sites_check_records_the_facts_and_a_store_that_cannot_be_written_does_not_stop_it(
    aif_home: Path, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aifactory_cli.errors import StoreError
    from aifactory_cli.service.session import Service
    from aifactory_cli.service.sites import check_site

    with Service(transport_factory=lambda site, loaded: RecordedCheck(version)) as svc:  # type: ignore[arg-type,return-value]
        rows = {c["check"]: c for c in check_site(svc, "lumi")["checks"]}
        assert rows["slurm features"]["detail"].endswith("(recorded)")
        stored = svc.store.site_facts("lumi")
        assert stored is not None and stored.checked_at  # when this check asked
        assert stored == replace(_facts(version), checked_at=stored.checked_at)

        def refuse(*_: object) -> None:
            raise StoreError("cannot write the job store x: the file system of y is read-only")

        monkeypatch.setattr(Store, "save_site_facts", refuse)
        rows = {c["check"]: c for c in check_site(svc, "lumi")["checks"]}
        assert rows["slurm features"]["detail"].endswith("(not recorded: cannot write the job store x: "
                                                         "the file system of y is read-only)")  # fmt: skip
        assert rows["slurm"]["status"] == "ok"
