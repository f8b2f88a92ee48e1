"""Ctrl-C and SIGTERM while waiting: detach at a terminal, cancel under CI / on SIGTERM / when asked,
and report the final states after a cancel. The decision as a pure function; `wait_and_report` on a
fake site (FakeSlurm) with real signals sent to this process; `--timeout` durations and `--debug`
after the command through the CLI."""

from __future__ import annotations

import json
import os
import signal
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from fakes import SITE, Session, fake_site, spec

from aifactory_cli.cli import hoist_debug, options, waiting
from aifactory_cli.cli.waiting import CANCEL, DETACH, at_terminal, ci_variable, interrupt_action
from aifactory_cli.errors import BadInput

INT, TERM = signal.SIGINT, signal.SIGTERM

# --- the decision ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "flag", "terminal", "action"),
    [
        (INT, None, True, DETACH),  # a person at a terminal keeps the job's place in the queue
        (INT, None, False, CANCEL),  # CI, cron, a pipe: nobody will come back for it
        (TERM, None, True, CANCEL),  # SIGTERM: the runner (or Slurm) is ending this step
        (TERM, None, False, CANCEL),
        (INT, True, True, CANCEL),  # --cancel-on-interrupt
        (TERM, True, False, CANCEL),
        (INT, False, False, DETACH),  # --no-cancel-on-interrupt: never cancels
        (TERM, False, True, DETACH),
    ],
)
def test_interrupt_action(signum: int, flag: bool | None, terminal: bool, action: str) -> None:
    assert interrupt_action(signum, flag, terminal) == action


@pytest.mark.parametrize(
    ("environ", "found"),
    [
        ({}, None),
        ({"CI": "true"}, "CI"),
        ({"CI": "1"}, "CI"),
        ({"CI": "false"}, None),
        ({"CI": "0"}, None),
        ({"CI": ""}, None),
        ({"GITHUB_ACTIONS": "true"}, "GITHUB_ACTIONS"),
        ({"GITLAB_CI": "true"}, "GITLAB_CI"),
        ({"JENKINS_URL": "https://ci.example/"}, "JENKINS_URL"),
        ({"AIFACTORY_NONINTERACTIVE": "1"}, "AIFACTORY_NONINTERACTIVE"),
        ({"HOME": "/home/me", "TERM": "xterm"}, None),
    ],
)
def test_ci_variable(environ: dict[str, str], found: str | None) -> None:
    assert ci_variable(environ) == found


def test_at_terminal_needs_both_ttys_and_no_ci() -> None:
    assert at_terminal({}, True, True)
    assert not at_terminal({}, False, True)  # stdin from /dev/null or a pipe
    assert not at_terminal({}, True, False)  # stderr to a log file
    assert not at_terminal({"GITLAB_CI": "true"}, True, True)  # a CI runner with a pty


# --- wait_and_report on a fake site -------------------------------------------------------------------------


@pytest.fixture
def session(aif_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    return fake_site(tmp_path, monkeypatch)


def _running(session: Session, tmp_path: Path) -> Any:
    with session() as svc:
        job = svc.submit(svc.prepare(spec(tmp_path, "sleepy", "run: sleep 600\n"), SITE))
    session.fake.slurm.start(job.slurm_job_id or "")
    with session() as svc:
        (job,) = svc.status([job.id])  # the store knows it runs, as a watch that saw it start
    assert job.state == "RUNNING"
    return job


def _signalled(svc: Any, plan: dict[tuple[str, int], list[int]]) -> Any:
    """`svc` whose n-th wait() or cancel() call gets real signals first: plan[("wait", 1)] = [SIGINT]
    signals the watch, ("wait", 2) the settle wait after a cancel, ("cancel", 1) the cancel."""
    real = {"wait": svc.wait, "cancel": svc.cancel}
    calls = {"wait": 0, "cancel": 0}

    def fire(kind: str) -> None:
        calls[kind] += 1
        for signum in plan.get((kind, calls[kind]), []):
            os.kill(os.getpid(), signum)  # the handler runs here, between two bytecodes

    def wait(**kwargs: Any) -> Any:
        fire("wait")
        return real["wait"](**kwargs)

    def cancel(refs: list[str]) -> Any:
        fire("cancel")
        return real["cancel"](refs)

    svc.wait, svc.cancel = wait, cancel
    svc.calls = calls
    return svc


def _report(
    session: Session, tmp_path: Path, flag: bool | None, plan: dict[tuple[str, int], list[int]]
) -> tuple[Any, int, dict[str, int], Path]:
    job = _running(session, tmp_path)
    junit = tmp_path / "report.xml"
    with session() as svc:
        svc = _signalled(svc, plan)
        before = {s: signal.getsignal(s) for s in (INT, TERM)}
        jobs = svc.jobs([job.id])
        code = waiting.wait_and_report(svc, jobs, None, False, flag, True, junit)
        assert {s: signal.getsignal(s) for s in (INT, TERM)} == before  # handlers restored
    return job, code, svc.calls, junit


def _junit_state(path: Path) -> str:
    prop = ET.parse(path).getroot().find(".//property[@name='state']")
    assert prop is not None
    return prop.get("value") or ""


def test_ctrl_c_at_a_terminal_detaches_and_says_how_to_reattach(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(waiting, "at_terminal", lambda environ, i, e: True)
    job, code, calls, junit = _report(session, tmp_path, None, {("wait", 1): [INT]})
    out, err = capsys.readouterr()
    assert code == 130 and calls["cancel"] == 0
    assert session.fake.slurm.calls("scancel") == []
    assert f"aifactory wait {job.id}" in err and f"aifactory cancel {job.id}" in err
    assert "not cancelled" in err and "--cancel-on-interrupt" in err
    assert [j["state"] for j in json.loads(out)["jobs"]] == ["RUNNING"]  # stdout: the current states
    assert _junit_state(junit) == "RUNNING"
    assert session.fake.slurm.jobs()[job.slurm_job_id]["state"] == "RUNNING"


@pytest.mark.parametrize(
    ("flag", "signum", "terminal", "code"),
    [(None, INT, False, 130), (None, TERM, True, 143), (True, INT, True, 130)],
    ids=["ctrl-c-without-terminal", "sigterm", "cancel-on-interrupt"],
)
def test_cancel_reports_the_final_states(
    session: Session,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flag: bool | None,
    signum: int,
    terminal: bool,
    code: int,
) -> None:
    monkeypatch.setattr(waiting, "at_terminal", lambda environ, i, e: terminal)
    job, got, calls, junit = _report(session, tmp_path, flag, {("wait", 1): [signum]})
    out, err = capsys.readouterr()
    assert got == code and calls["cancel"] == 1
    assert session.fake.slurm.calls("scancel") == [[job.slurm_job_id]]
    assert f"cancelling {job.id}" in err and f"{job.id} sleepy: CANCELLED" in err
    assert [j["state"] for j in json.loads(out)["jobs"]] == ["CANCELLED"]  # the site's final state
    assert _junit_state(junit) == "CANCELLED"


def test_no_cancel_on_interrupt_never_cancels_not_even_on_sigterm(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job, code, calls, _ = _report(session, tmp_path, False, {("wait", 1): [TERM]})
    err = capsys.readouterr().err
    assert code == 143 and calls["cancel"] == 0 and session.fake.slurm.calls("scancel") == []
    assert "terminated (SIGTERM)" in err and f"aifactory wait {job.id}" in err
    assert "--cancel-on-interrupt" not in err  # asked for explicitly: no advice


@pytest.mark.parametrize("during", [("cancel", 1), ("wait", 2)], ids=["sending", "settling"])
def test_a_second_ctrl_c_while_cancelling_is_noted_not_obeyed(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str], during: tuple[str, int]
) -> None:
    job, code, _, junit = _report(session, tmp_path, True, {("wait", 1): [INT], during: [INT]})
    out, err = capsys.readouterr()
    assert code == 130 and "press Ctrl-C again" in err and "Traceback" not in err
    assert session.fake.slurm.calls("scancel") == [[job.slurm_job_id]]
    assert [j["state"] for j in json.loads(out)["jobs"]] == ["CANCELLED"]  # not cut short
    assert _junit_state(junit) == "CANCELLED"


def test_a_third_ctrl_c_stops_the_cancel_without_a_traceback(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job, code, _, _ = _report(session, tmp_path, True, {("wait", 1): [INT], ("cancel", 1): [INT, INT]})
    out, err = capsys.readouterr()
    assert code == 130 and "stopped before the site confirmed the cancel" in err and "Traceback" not in err
    assert f"aifactory status {job.id}" in err
    assert session.fake.slurm.calls("scancel") == []  # stopped before it was sent
    assert [j["state"] for j in json.loads(out)["jobs"]] == ["RUNNING"]


def test_a_third_ctrl_c_stops_waiting_for_the_final_states(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job, code, _, _ = _report(session, tmp_path, True, {("wait", 1): [INT], ("wait", 2): [INT, INT]})
    err = capsys.readouterr().err
    assert code == 130 and "stopped waiting for the final states" in err and "Traceback" not in err
    assert session.fake.slurm.calls("scancel") == [[job.slurm_job_id]]  # the cancel itself went out


def test_a_cancel_the_site_does_not_confirm_in_time_is_bounded(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(waiting, "SETTLE_SECONDS", 1.0)
    job = _running(session, tmp_path)
    with session() as svc:
        svc = _signalled(svc, {("wait", 1): [TERM]})
        svc.cancel = lambda refs: svc.jobs(refs)  # a scancel that the site ignores
        code = waiting.wait_and_report(svc, svc.jobs([job.id]), None, False, None, True)
    out, err = capsys.readouterr()
    assert code == 143 and "did not report the end" in err and f"aifactory status {job.id}" in err
    assert [j["state"] for j in json.loads(out)["jobs"]] == ["RUNNING"]


# --- --timeout DURATION and --debug after the command ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3600", 3600),
        ("0", 0),
        ("2.5", 2.5),
        ("90s", 90),
        ("10m", 600),
        ("1h", 3600),
        ("1d", 86400),
        ("0s", 0),
        ("1:30", 90),
        ("01:00:00", 3600),
        (" 10m ", 600),
    ],
)
def test_timeout_takes_seconds_or_durations(text: str, seconds: float) -> None:
    assert options.parse_timeout(text) == seconds


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "5x", "ten", "", "1:75"])
def test_bad_timeouts_are_bad_input(text: str) -> None:
    with pytest.raises(BadInput, match="--timeout"):
        options.parse_timeout(text)


def test_hoist_debug() -> None:
    assert hoist_debug(["status", "--debug"]) == ["--debug", "status"]
    assert hoist_debug(["--debug", "status"]) == ["--debug", "status"]
    assert hoist_debug(["status", "x"]) == ["status", "x"]
    assert hoist_debug(["exec", "J", "--", "cmd", "--debug"]) == ["exec", "J", "--", "cmd", "--debug"]


def test_cli_timeout_durations_and_debug_after_the_command(cli, tmp_path: Path) -> None:
    job_id = cli("submit", str(spec(tmp_path, "quick", "run: 'true'\n"))).stdout.strip()
    r = cli("wait", job_id, "--timeout", "1m", "--json")
    assert r.code == 0, r.stderr
    bad = cli("wait", job_id, "--timeout", "5x")
    assert bad.code == 2 and "--timeout '5x'" in bad.stderr and "90s, 10m, 1h" in bad.stderr
    assert cli("submit", str(tmp_path / "quick.yaml"), "--wait", "--timeout", "soon").code == 2
    assert len(json.loads(cli("list", "--json").stdout)["jobs"]) == 1  # a bad --timeout submits nothing
    # --debug after the command: accepted (it was `No such option: --debug`, exit 2)
    r = cli("status", job_id, "--debug", "--json")
    assert r.code == 0, r.stderr
    r = cli("status", "nosuchjob", "--debug")
    assert r.code == 4 and "No such option" not in r.stderr
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: x\nrun: [unclosed\n")
    assert "Traceback" not in cli("render", str(bad_yaml)).stderr
    r = cli("render", str(bad_yaml), "--debug")  # debug is on: the YAML error's cause is shown
    assert r.code == 2 and "malformed YAML" in r.stderr and "Traceback" in r.stderr
    for command in ("submit", "wait"):
        assert "--no-cancel-on-interrupt" in cli(command, "--help").stdout
