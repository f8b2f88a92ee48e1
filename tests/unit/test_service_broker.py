"""The broker (`plan`, `submit --site auto`, `usage`) in-process, on the fake site of fakes.py:
`sbatch --test-only` and sacct run as the real command text against the fake Slurm."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import SITE, Session, fake_site, spec

from aifactory_cli.errors import BadInput, LimitError, RemoteError
from aifactory_cli.service import broker
from aifactory_cli.service.broker import PlanRow
from aifactory_cli.sites.resolve import Overrides

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"
SOON, LATE = "2000-01-01T00:00:00", "2999-01-01T00:00:00"  # before and after `local`'s "now"


@pytest.fixture
def session(aif_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    return fake_site(tmp_path, monkeypatch)


def _by_site(rows: list[PlanRow]) -> dict[str, PlanRow]:
    return {r.site: r for r in rows}


# --- plan -----------------------------------------------------------------------------------------


def test_plan_asks_sbatch_test_only_and_estimates_the_charge(session: Session, tmp_path: Path) -> None:
    session.fake.slurm.set(test_only_start="2026-12-01T08:00:00")
    rows = broker.plan(session(), str(spec(tmp_path)), [SITE, "local"], Overrides())
    fake, local = rows[0], rows[1]
    assert [r.site for r in rows] == [SITE, "local"]
    assert fake.ok and fake.reason is None
    assert (fake.partition, fake.start, fake.nodes) == ("small", "2026-12-01T08:00:00", "nid005000")
    # LUMI `small` is lumi_shared_cpu at rate 1: 1 core x 5 min
    assert fake.unit == "core-hours" and fake.charge == pytest.approx(5 / 60, abs=1e-3)
    assert fake.charge_how == "1 core x 1 node x 5 min"
    # the script went to sbatch on stdin; nothing was queued
    assert session.fake.commands == ["sbatch --test-only"]
    assert session.fake.slurm.jobs() == {}
    # `local` needs no scheduler: it can start now, and has no billing rule
    assert local.ok and local.start and local.charge is None and local.nodes is None


def test_plan_rules_out_sites_by_requirements_and_by_sbatch(session: Session, tmp_path: Path) -> None:
    nvidia = spec(tmp_path, "nv", "requires: {gpu_vendor: nvidia}\nrun: nvidia-smi\n")
    (row,) = broker.plan(session(), str(nvidia), [SITE], Overrides())
    assert not row.ok and row.reason == f"the spec requires nvidia GPUs; {SITE} has amd"
    assert session.fake.commands == []  # ruled out before anything was sent

    # a per-site override of `requires` applies to that site only
    arm = spec(tmp_path, "arm", f"sites:\n  {SITE}: {{requires: {{cpu_arch: aarch64}}}}\nrun: uname -m\n")
    rows = _by_site(broker.plan(session(), str(arm), [SITE, "local"], Overrides()))
    assert rows[SITE].reason == f"the spec requires aarch64; {SITE} is x86_64" and not rows[SITE].ok
    assert rows["local"].ok

    session.fake.slurm.set(sbatch_fault="rejected")
    (row,) = broker.plan(session(), str(spec(tmp_path)), [SITE], Overrides())
    assert not row.ok and row.reason == "Invalid account or account/partition combination specified"
    assert row.partition == "small" and row.charge is not None  # resolved before sbatch said no

    session.fake.slurm.set(sbatch_fault=None)
    session.fake.refuse_login = True
    (row,) = broker.plan(session(), str(spec(tmp_path)), [SITE], Overrides())
    assert not row.ok and row.reason is not None
    assert row.reason.startswith(f"cannot reach {SITE}: cannot connect to fake.invalid")


def test_plan_reports_a_spec_that_does_not_resolve_on_a_site(session: Session, tmp_path: Path) -> None:
    rows = broker.plan(session(), str(spec(tmp_path)), [SITE], Overrides(partition="nosuchpartition"))
    assert not rows[0].ok and "nosuchpartition" in (rows[0].reason or "")
    assert session.fake.commands == []


def test_candidate_sites_come_from_the_config_and_the_environment(
    session: Session, aif_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert broker.candidate_sites(session(), ["a", "b"]) == ["a", "b"]
    with pytest.raises(BadInput, match="no sites to compare"):
        broker.candidate_sites(session(), None)
    aif_home.mkdir(parents=True, exist_ok=True)
    (aif_home / "config.yaml").write_text(
        f"sites:\n  {SITE}: {{account: project_465000001}}\n  lumi: {{user: me}}\n  jupiter: {{account: a1}}\n"
    )
    assert broker.candidate_sites(session(), None) == [SITE, "jupiter"]  # only sites with an account
    monkeypatch.setenv("AIFACTORY_SITE", "local")
    assert broker.candidate_sites(session(), None) == [SITE, "jupiter", "local"]
    monkeypatch.setenv("AIFACTORY_SITE", SITE)  # named once
    assert broker.candidate_sites(session(), None) == [SITE, "jupiter"]


# --- rank / check_prefer / choose_site -----------------------------------------------------------------


def _row(site: str, ok: bool = True, start: str | None = None, charge: float | None = None, unit: str = "u") -> PlanRow:
    return PlanRow(site=site, ok=ok, start=start, charge=charge, unit=unit if charge is not None else None)


def test_rank_puts_runnable_sites_first_then_by_start_or_cost() -> None:
    rows = [
        _row("broken", ok=False, start="2000-01-01T00:00:00", charge=0.1),
        _row("late_cheap", start="2026-12-02T00:00:00", charge=1.0),
        _row("soon_dear", start="2026-12-01T00:00:00", charge=9.0),
        _row("unknown_start", start="not a time", charge=0.5),
    ]
    by_start = [r.site for r in broker.rank(rows, "start")]
    assert by_start == ["soon_dear", "late_cheap", "unknown_start", "broken"]
    by_cost = [r.site for r in broker.rank(rows, "cost")]
    assert by_cost == ["unknown_start", "late_cheap", "soon_dear", "broken"]


def test_rank_by_cost_needs_one_unit_to_compare() -> None:
    rows = [_row("a", start="2026-12-02T00:00:00", charge=1.0, unit="GPU-hours"),
            _row("b", start="2026-12-01T00:00:00", charge=50.0, unit="core-hours")]  # fmt: skip
    assert [r.site for r in broker.rank(rows, "cost")] == ["b", "a"]  # falls back to the start


def test_check_prefer_accepts_only_start_and_cost() -> None:
    assert broker.check_prefer("cost") == "cost" and broker.check_prefer("start") == "start"
    with pytest.raises(BadInput) as info:
        broker.check_prefer("cheapest")
    assert info.value.exit_code == 2 and "--prefer start or --prefer cost" in (info.value.hint or "")


def test_a_bad_prefer_is_refused_before_any_site_is_asked(session: Session, tmp_path: Path) -> None:
    path = str(spec(tmp_path))
    for call in (
        lambda: broker.choose_site(session(), path, [SITE], Overrides(), "cheapest"),
        lambda: broker.compare(session(), path, [SITE], "cheapest"),
    ):
        with pytest.raises(BadInput):
            call()
    assert session.fake.commands == []  # no sbatch --test-only went out


def test_choose_site_picks_the_soonest_start_and_says_why(session: Session, tmp_path: Path) -> None:
    path = str(spec(tmp_path))
    session.fake.slurm.set(test_only_start=SOON)
    site, why = broker.choose_site(session(), path, [SITE, "local"], Overrides(), "start")
    assert site == SITE
    assert why.startswith(f"chose {SITE} (small) starts {SOON}, costs about 0.0833 core-hours [prefer start]")
    assert "; vs local: starts " in why

    session.fake.slurm.set(test_only_start=LATE)
    site, why = broker.choose_site(session(), path, [SITE, "local"], Overrides(), "start")
    assert site == "local" and why.startswith("chose local (None) starts ")
    assert f"{SITE}: starts {LATE}, 0.0833 core-hours" in why

    # --prefer cost compares charges only where the runnable sites share one unit: `local` has
    # none, so the soonest start decides, whichever way round
    site, why = broker.choose_site(session(), path, [SITE, "local"], Overrides(), "cost")
    assert site == "local" and why.endswith(f"[prefer cost]; vs {SITE}: starts {LATE}, 0.0833 core-hours")
    session.fake.slurm.set(test_only_start=SOON)
    site, _ = broker.choose_site(session(), path, [SITE, "local"], Overrides(), "cost")
    assert site == SITE


def test_choose_site_fails_with_every_reason_when_no_site_can_run_it(session: Session, tmp_path: Path) -> None:
    nvidia = spec(tmp_path, "nv", "requires: {gpu_vendor: nvidia}\nrun: nvidia-smi\n")
    with pytest.raises(LimitError) as info:
        broker.choose_site(session(), str(nvidia), [SITE, "local"], Overrides(), "start")
    assert f"{SITE}: the spec requires nvidia GPUs; {SITE} has amd" in info.value.message
    assert "local: the spec requires nvidia GPUs; local has no GPUs" in info.value.message
    with pytest.raises(BadInput, match="--prefer 'fast'"):
        broker.choose_site(session(), str(spec(tmp_path)), [SITE], Overrides(), "fast")


def test_compare_passes_the_account_and_ranks(session: Session, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("AIFACTORY_ACCOUNT")
    session.fake.slurm.set(test_only_start=LATE)
    rows = broker.compare(session(), str(spec(tmp_path)), [SITE, "local"], "start", account="project_465000002")
    assert [r.site for r in rows] == ["local", SITE] and all(r.ok for r in rows)
    rows = broker.compare(session(), str(spec(tmp_path)), [SITE], "start")
    assert not rows[0].ok and "account" in (rows[0].reason or "")


# --- usage --------------------------------------------------------------------------------------------

USAGE = """\
100|standard-g|2|3600|billing=112,cpu=112,gres/gpu:mi250=16,gres/gpu=16,mem=196000M,node=2|COMPLETED
101|small-g|1|7200|billing=7,cpu=7,gres/gpu:mi250=1,gres/gpu=1,mem=60G,node=1|COMPLETED
102|small|1|3600|billing=1,cpu=1,mem=1750M,node=1|FAILED
103|standard|1|1800|billing=128,cpu=128,mem=224000M,node=1|CANCELLED by 1001
104|small|1|3600|billing=5,cpu=1,mem=10G,node=1|COMPLETED
105|nosuchpartition|1|3600|billing=1,cpu=1,mem=1750M,node=1|COMPLETED
106|small|1|Unknown|billing=1,cpu=1,mem=1750M,node=1|RUNNING
"""


def test_usage_charges_sacct_allocations_with_the_profile_billing_rules(session: Session) -> None:
    session.fake.slurm.set(usage=USAGE)
    out = broker.usage(session(), SITE)
    assert out["site"] == SITE and out["source"].startswith("sacct since ")
    assert out["jobs"] == 5  # 105: no such partition; 106: no elapsed time
    # standard-g: 4/node-hour x 2 nodes x 1 h = 8; small-g: 0.5 x max(1 GCD, 7/8, 60/64) x 2 h = 1
    # small: max(1 core, 1750M/2G) x 1 h = 1, and max(1 core, 10G/2G = 5) x 1 h = 5; standard: 128 x 0.5 h
    assert out["charged"] == {"GPU-hours": 9.0, "core-hours": 70.0}
    # lumi-allocations is not on the fake site: usage fell back to sacct, from the first of the month
    (tool, sacct) = session.fake.commands
    assert tool == "lumi-allocations" and sacct.startswith("sacct --noheader --parsable2 --allocations --starttime=")
    assert sacct.endswith("--format=JobID,Partition,NNodes,ElapsedRaw,AllocTRES,State")


def test_usage_over_the_recorded_sacct_output(session: Session) -> None:
    text = (DATA / "22.05" / "sacct_usage.txt").read_text()
    session.fake.slurm.set(usage=text)
    out = broker.usage(session(), SITE)
    assert out["jobs"] == len(text.splitlines())  # every recorded partition is a LUMI one
    assert set(out["charged"]) == {"GPU-hours", "core-hours"}
    # the only GPU allocation with time: 56, standard-g, 2 nodes for 1 s = 4 x 2 / 3600
    assert out["charged"]["GPU-hours"] == round(8 / 3600, 3)


def test_usage_prefers_the_site_tool_and_reports_a_failing_sacct(session: Session) -> None:
    tool = session.fake.slurm.bin / "lumi-allocations"  # on the fake site's PATH
    tool.write_text("#!/bin/sh\necho 'project_465000001  used 12 / 1000 GPU-hours'\n")
    tool.chmod(0o755)
    out = broker.usage(session(), SITE)
    assert out == {"site": SITE, "source": "lumi-allocations", "text": "project_465000001  used 12 / 1000 GPU-hours\n"}
    assert not any(c.startswith("sacct") for c in session.fake.commands)

    tool.unlink()
    sacct = session.fake.slurm.bin / "sacct"
    sacct.write_text("#!/bin/sh\necho 'sacct: error: Problem talking to the database' >&2\nexit 1\n")
    with pytest.raises(RemoteError, match=f"sacct failed on {SITE}: sacct: error: Problem talking to the database"):
        broker.usage(session(), SITE)


def test_mem_gib_reads_slurm_sizes() -> None:
    assert broker._mem_gib("60G") == 60
    assert broker._mem_gib("2048M") == 2
    assert broker._mem_gib("1T") == 1024
    assert broker._mem_gib("1048576K") == 1
    assert broker._mem_gib("512") == 0.5  # no suffix: MiB
    assert broker._mem_gib("") == 0 and broker._mem_gib("lots") == 0
