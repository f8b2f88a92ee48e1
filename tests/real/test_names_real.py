"""Names and status columns on the real test bed: a spec submitted twice keeps its name usable
(the newest job, with a note), a name with several live jobs is refused, a pending job shows no
start, no exit code and Slurm's expected start apart, and `cancel` is in `list` at once."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.real


def _spec(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"name: {name}\nresources: {{time: 5m}}\n{text}")
    return str(p)


def _submit(tb, spec: str) -> str:
    r = tb("submit", spec, "--site", "testbed")
    assert r.code == 0, r.stderr
    return r.stdout.strip()


def _jobs(r) -> list[dict]:
    assert r.stdout, r.stderr
    return json.loads(r.stdout)["jobs"]


def _table(text: str) -> list[dict[str, str]]:
    """The plain `list` table as rows of {column: cell}, cut at the header's column starts."""
    header, *lines = text.splitlines()
    names = ["ID", "NAME", "SITE", "SLURM ID", "STATE", "EXIT", "QUEUED", "RUNNING", "REASON"]
    starts = [header.index(n) for n in names]
    ends = [*starts[1:], None]
    return [{n: line[s:e].strip() for n, s, e in zip(names, starts, ends, strict=True)} for line in lines]


def test_a_name_means_its_newest_job_and_several_live_ones_are_refused(tb, tmp_path: Path) -> None:
    twice = _spec(tmp_path, "twice", 'run: echo "I am $SLURM_JOB_ID"\n')
    first, second = _submit(tb, twice), _submit(tb, twice)
    held = _spec(tmp_path, "heldtwice", "slurm: {hold: true}\nrun: echo never\n")
    h1, h2 = _submit(tb, held), _submit(tb, held)
    assert tb("wait", first, second, "--timeout", "60").code == 0

    r = tb("logs", "twice")
    assert r.code == 0, r.stderr
    slurm_ids = {j["id"]: j["slurm_job_id"] for j in _jobs(tb("list", "--json"))}
    assert r.stdout.strip() == f"I am {slurm_ids[second]}"
    assert f"note: 'twice' is job {second} (newest of 2; others: {first} COMPLETED)" in r.stderr
    r = tb("status", "twice", "--json")
    assert r.code == 0 and [j["id"] for j in _jobs(r)] == [second]

    # two held jobs of one name: any pick would be a guess, so nothing is cancelled
    r = tb("cancel", "heldtwice")
    assert r.code == 2 and "'heldtwice' names 2 live jobs" in r.stderr
    assert h1 in r.stderr and h2 in r.stderr
    assert {j["state"] for j in _jobs(tb("status", h1, h2, "--json"))} == {"PENDING"}
    assert tb("cancel", h1).code == 0
    r = tb("cancel", "heldtwice")  # now h2 is the only live one
    assert r.code == 0 and f"note: 'heldtwice' is job {h2} (the live one of 2;" in r.stderr
    got = {j["id"]: j["state"] for j in _jobs(tb("list", "--json", "--name", "heldtwice"))}
    assert got == {h1: "CANCELLED", h2: "CANCELLED"}  # from the store alone: no `status` ran


def test_a_pending_job_shows_no_start_and_no_exit_and_cancel_is_listed_at_once(tb, tmp_path: Path) -> None:
    job_id = _submit(tb, _spec(tmp_path, "later", "slurm: {begin: now+600}\nrun: echo never\n"))
    deadline = time.monotonic() + 20
    while True:  # the scheduler fills in the reason and the estimate on its next pass
        (job,) = _jobs(tb("status", job_id, "--json"))
        if (job["expected_start"] and job["reason"]) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert (job["state"], job["started_at"], job["exit_code"], job["reason"]) == ("PENDING", None, None, "BeginTime")
    ahead = dt.datetime.fromisoformat(job["expected_start"]) - dt.datetime.fromisoformat(job["submitted_at"])
    assert 540 < ahead.total_seconds() < 660, job
    (row,) = _table(tb("list").stdout)
    assert (row["STATE"], row["EXIT"], row["RUNNING"], row["REASON"]) == ("PENDING", "", "", "BeginTime")
    minutes, seconds = row["QUEUED"].split(":")
    assert int(minutes) == 0 and int(seconds) < 40, row  # since submission, not to the estimate (10:00)

    r = tb("cancel", "later")
    assert r.code == 0, r.stderr
    (job,) = _jobs(tb("list", "--json"))  # no `status` in between
    assert (job["state"], job["reason"], job["exit_code"]) == ("CANCELLED", None, None), job
    assert job["started_at"] is None and job["expected_start"] is None and job["ended_at"]
    (row,) = _table(tb("list").stdout)
    assert (row["STATE"], row["EXIT"], row["RUNNING"], row["REASON"]) == ("CANCELLED", "", "", "")
