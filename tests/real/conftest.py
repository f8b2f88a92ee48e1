"""Fixtures for tests against the running test bed (tests/testbed/start.sh): sshd + Slurm on 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aifactory_cli.sites.profile import SshSettings
from tests.real.slurmbeds import BEDS, SlurmBed, bed_of

TESTBED_DIR = Path(os.environ.get("TESTBED_DIR", "/tmp/testbed"))
TESTBED_CLIENT = TESTBED_DIR / "client"
TESTBED_KEY = TESTBED_CLIENT / "id_ed25519"
TESTBED_KNOWN_HOSTS = TESTBED_CLIENT / "known_hosts"
TESTBED_SSH_CONFIG = TESTBED_CLIENT / "ssh_config"  # Host testbed, testbed-jump, testbed-via-jump
TESTBED_SSH_PORT = int(os.environ.get("TESTBED_SSH_PORT", "2222"))
TESTBED_JUMP_PORT = int(os.environ.get("TESTBED_JUMP_PORT", "2223"))
TESTBED_USER = os.environ.get("TESTBED_USER", "hpcuser")


@pytest.fixture
def testbed_client() -> Path:
    """The test bed's client files; skips when the test bed was never started here (CI always starts it)."""
    if not TESTBED_KEY.is_file():
        pytest.skip(f"no test bed ({TESTBED_KEY} missing): run tests/testbed/start.sh")
    return TESTBED_CLIENT


@pytest.fixture
def isolated_ssh_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ~/.ssh/config and no ssh-agent of the person running the tests. Returns the (empty)
    ssh_config that AIFACTORY_SSH_CONFIG points at."""
    config = tmp_path / "ssh_config_empty"
    config.write_text("")
    monkeypatch.setenv("AIFACTORY_SSH_CONFIG", str(config))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return config


@pytest.fixture
def testbed_ssh_settings(testbed_client: Path, isolated_ssh_env: Path) -> SshSettings:
    """Profile-style SSH settings for the test bed's login node (127.0.0.1:2222), no ssh_config."""
    return SshSettings(
        host="127.0.0.1",
        port=TESTBED_SSH_PORT,
        user=TESTBED_USER,
        identity_file=str(TESTBED_KEY),
        known_hosts=str(TESTBED_KNOWN_HOSTS),
        connect_timeout=10,
    )


TESTBED_ACCOUNT = "project_465000001"


@pytest.fixture
def tb(cli, tmp_path: Path):
    """`aifactory ...` (a subprocess) against the test bed's sites, with the account from the
    environment as CI sets it, and an empty ssh_config (`tmp_path/ssh_config_empty`) instead of the
    ~/.ssh/config of whoever runs the tests. `tb(..., env={...})` adds variables."""
    if not TESTBED_KEY.is_file():
        pytest.fail(f"no test bed ({TESTBED_KEY} missing): run tests/testbed/start.sh (tests/run does)")
    empty = tmp_path / "ssh_config_empty"
    empty.write_text("")

    def call(*args: str, env: dict[str, str] | None = None, **kw):
        full = {"AIFACTORY_ACCOUNT": TESTBED_ACCOUNT, "AIFACTORY_SSH_CONFIG": str(empty), **(env or {})}
        return cli(*args, env=full, **kw)

    return call


@pytest.fixture
def testbed_env(tmp_path: Path) -> dict[str, str]:
    """A whole environment for `subprocess` runs of aifactory against the test bed: a private
    AIFACTORY_HOME, `tmp_path/profiles` searched before tests/profiles, the account, an empty
    ssh_config, and no AIFACTORY_* of the person running the tests."""
    if not TESTBED_KEY.is_file():
        pytest.fail(f"no test bed ({TESTBED_KEY} missing): run tests/testbed/start.sh (tests/run does)")
    from tests.conftest import TEST_PROFILES

    empty = tmp_path / "ssh_config_empty"
    empty.write_text("")
    (tmp_path / "profiles").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIFACTORY_")}
    env.update(
        AIFACTORY_HOME=str(tmp_path / "home"),
        AIFACTORY_PROFILES=f"{tmp_path / 'profiles'}:{TEST_PROFILES}",
        AIFACTORY_ACCOUNT=TESTBED_ACCOUNT,
        AIFACTORY_SSH_CONFIG=str(empty),
        NO_COLOR="1",
    )
    return env


@pytest.fixture(params=list(BEDS))
def slurm_bed(request: pytest.FixtureRequest) -> SlurmBed:
    """The test runs once on each Slurm test bed (22.05 and 24.11: tests/real/slurmbeds.py)."""
    bed = BEDS[request.param]
    if not bed.known_hosts.is_file():
        pytest.fail(f"no Slurm {bed.version} test bed ({bed.known_hosts} missing): run tests/testbed/start24.sh")
    return bed


# Per Slurm version, the real tier's passed/failed/skipped counts and call time, printed at the end
# (tests/run's real half): the figures issue 17 asks for, without parsing pytest's output.
_BY_BED: dict[str, dict[str, float]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # the call's outcome, or a setup that skipped or failed (then there is no call)
    if "real" not in report.keywords or not (report.when == "call" or (report.when == "setup" and not report.passed)):
        return
    tally = _BY_BED.setdefault(bed_of(report.nodeid), {"passed": 0, "failed": 0, "skipped": 0, "s": 0.0})
    tally[report.outcome] += 1
    tally["s"] += report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for version, t in sorted(_BY_BED.items()):
        terminalreporter.write_line(
            f"real tier on Slurm {version}: {t['passed']:.0f} passed, {t['failed']:.0f} failed,"
            f" {t['skipped']:.0f} skipped, {t['s']:.0f} s in tests"
        )
