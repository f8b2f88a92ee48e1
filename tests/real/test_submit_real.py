"""Submission over SSH to the real Slurm test bed, through the CLI as users and CI run it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.real.conftest import TESTBED_ACCOUNT, TESTBED_CLIENT

pytestmark = pytest.mark.real
TESTBED_CLIENT = TESTBED_CLIENT
TESTBED_KEY = TESTBED_CLIENT / "id_ed25519"
TESTBED_KNOWN_HOSTS = TESTBED_CLIENT / "known_hosts"
ACCOUNT = TESTBED_ACCOUNT


def _jobs(result) -> list[dict]:
    return json.loads(result.stdout)["jobs"]


def test_train_example_runs_on_two_gpu_nodes(tb) -> None:
    r = tb("submit", str(EXAMPLES / "train.yaml"), "--site", "testbed", "--wait", "--json", "--timeout", "120")
    assert r.code == 0, r.stderr
    job = _jobs(r)[0]
    assert job["state"] == "COMPLETED" and job["exit_code"] == 0
    assert job["workdir"].startswith(f"/scratch/{ACCOUNT}/hpcuser/aifactory/train-")
    out = tb("logs", job["id"]).stdout.splitlines()
    ranks = sorted(line for line in out if line.startswith("rank "))
    assert len(ranks) == 16, out
    for rank in range(16):
        # the launch contract: RANK, LOCAL_RANK, WORLD_SIZE from the step; one task per GCD, each
        # seeing the node's 8 GCDs (gpu_binding: all, the default) and taking cuda:LOCAL_RANK
        line = next(x for x in ranks if x.startswith(f"rank {rank}/16 local {rank % 8} "))
        assert "ROCR_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 " in line
        assert ("nid005000" if rank < 8 else "nid005001") in line
    # the job dir is private, and holds the script and its own exit code
    mode = subprocess.run(["stat", "-c", "%a", job["workdir"]], capture_output=True, text=True).stdout.strip()
    assert mode.endswith("700"), mode
    assert (Path(job["workdir"]) / "exit_code").read_text().strip() == "0"
    # the token is in the Slurm comment and in the job dir's metadata
    meta = json.loads((Path(job["workdir"]) / "aifactory.json").read_text())
    assert meta["token"] == job["token"]
    assert (Path(job["workdir"]) / "slurm_job_id").read_text().strip() == job["slurm_job_id"]
    shown = subprocess.run(["scontrol", "show", "job", job["slurm_job_id"]], capture_output=True, text=True).stdout
    assert f"Comment=aifactory:{job['token']}" in shown


def test_bad_account_is_rejected_by_slurm(tb) -> None:
    r = tb("submit", str(EXAMPLES / "hello.yaml"), "--site", "testbed", "-A", "project_999999999")
    assert r.code == 2, r.stderr
    # the account's project dir does not exist, as on LUMI: refused before sbatch, naming the account
    assert "project_999999999" in r.stderr and "hint:" in r.stderr
    assert _jobs(tb("list", "--json")) == []


def test_slurm_rejection_is_exit_2_with_slurms_reason(tb, tmp_path: Path) -> None:
    spec = tmp_path / "feat.yaml"
    spec.write_text("run: echo hi\nslurm: {constraint: nosuchfeature}\n")
    r = tb("submit", str(spec), "--site", "testbed")
    assert r.code == 2, r.stderr
    assert "Slurm rejected the job" in r.stderr and "Invalid feature" in r.stderr
    assert _jobs(tb("list", "--json")) == []


def test_second_account_works_and_wrong_account_is_rejected_by_slurm(tb, tmp_path: Path) -> None:
    # a site where the job dir does not depend on the account: Slurm itself refuses the account
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "tbhome.yaml").write_text("extends: testbed\nworkdir: $HOME/aifactory/jobs/{job}\n")
    env = {"AIFACTORY_PROFILES": f"{profiles}:{Path(__file__).resolve().parents[1] / 'profiles'}"}
    r = tb("submit", str(EXAMPLES / "hello.yaml"), "--site", "tbhome", "-A", "project_999999999", env=env)
    assert r.code == 2, r.stderr
    assert "Invalid account" in r.stderr and "hint:" in r.stderr
    r = tb("submit", str(EXAMPLES / "hello.yaml"), "--site", "tbhome", "-A", "project_465000002", "--wait", env=env)
    assert r.code == 0, r.stderr


def test_missing_module_fails_the_job_as_on_the_site(tb, tmp_path: Path) -> None:
    spec = tmp_path / "mod.yaml"
    spec.write_text("modules: [nosuch/1.0]\nrun: echo should-not-run\nresources: {time: 5m}\n")
    r = tb("submit", str(spec), "--site", "testbed", "--wait", "--json", "--timeout", "60")
    assert r.code == 1
    job = _jobs(r)[0]
    assert (job["state"], job["exit_code"]) == ("FAILED", 1)
    assert "should-not-run" not in tb("logs", job["id"]).stdout
    assert "nosuch/1.0" in tb("logs", job["id"], "--stderr").stdout


def _site(tmp_path: Path, name: str, **ssh: object) -> Path:
    d = tmp_path / "profiles"
    d.mkdir(exist_ok=True)
    base = {
        "host": "127.0.0.1",
        "port": 2222,
        "user": "hpcuser",
        "identity_file": str(TESTBED_KEY),
        "known_hosts": str(TESTBED_KNOWN_HOSTS),
        "connect_timeout": 5,
        **ssh,
    }
    lines = "\n".join(f"  {k}: {json.dumps(v)}" for k, v in base.items())
    (d / f"{name}.yaml").write_text(f"extends: testbed\nssh:\n{lines}\n")
    return d


@pytest.mark.parametrize(
    ("case", "ssh", "needle"),
    [
        ("unknown-host-key", {"known_hosts": "EMPTY"}, "host key"),
        ("wrong-key", {"identity_file": "NEWKEY"}, "refused the login"),
        ("dead-port", {"port": 1}, "127.0.0.1:1"),
    ],
)
def test_connection_failures_exit_3(tb, tmp_path: Path, case: str, ssh: dict, needle: str) -> None:
    if ssh.get("known_hosts") == "EMPTY":
        empty = tmp_path / "known_hosts"
        empty.write_text("")
        ssh["known_hosts"] = str(empty)
    if ssh.get("identity_file") == "NEWKEY":
        key = tmp_path / "other_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        ssh["identity_file"] = str(key)
    profiles = _site(tmp_path, "tbvariant", **ssh)
    env = {"AIFACTORY_PROFILES": f"{profiles}:{Path(__file__).resolve().parents[1] / 'profiles'}"}
    r = tb("submit", str(EXAMPLES / "hello.yaml"), "--site", "tbvariant", env=env, timeout=60)
    assert r.code == 3, (r.stdout, r.stderr)
    assert needle.lower() in r.stderr.lower()
    assert "Traceback" not in r.stderr
    # the connection failed before anything was sent: nothing is recorded as submitted
    assert _jobs(tb("list", "--json", env=env)) == []


def test_unchanged_uploads_are_not_sent_again(tb, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"f{i}.txt").write_text(f"content {i}\n")
    spec = tmp_path / "up.yaml"
    spec.write_text("name: up\nupload: [data/]\nrun: cat data/*.txt\nresources: {time: 5m}\n")

    def submit() -> tuple[dict, str]:
        r = tb("submit", str(spec), "--site", "testbed", "--wait", "--json", "--timeout", "60")
        assert r.code == 0, r.stderr
        return _jobs(r)[0], r.stderr

    _first, err = submit()
    assert "uploaded 3 file(s)" in err
    second, err = submit()
    assert "uploaded 0 file(s)" in err and "3 unchanged file(s) not sent" in err
    assert tb("logs", second["id"]).stdout.splitlines() == ["content 0", "content 1", "content 2"]
    (data / "f1.txt").write_text("changed\n")
    (data / "f2.txt").unlink()
    third, err = submit()
    assert "uploaded 1 file(s)" in err and "1 unchanged" in err
    assert tb("logs", third["id"]).stdout.splitlines() == ["content 0", "changed"]
    # the site purged the cache (e.g. a scratch cleanup): everything is sent again, nothing is lost
    cache = Path(third["workdir"]).parent / ".uploads"
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    fourth, err = submit()
    assert tb("logs", fourth["id"]).stdout.splitlines() == ["content 0", "changed"]


def test_commands_share_one_login_through_the_agent(
    tb, aif_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With persistence on (AIFACTORY_PERSIST), the first command starts a background agent that
    keeps the login; later commands reuse it."""
    env = {"AIFACTORY_PERSIST": "60"}
    first = tb("submit", str(EXAMPLES / "hello.yaml"), "--site", "testbed", env=env)
    assert first.code == 0, first.stderr
    agents = list((aif_home / "state" / "agents").glob("*.sock"))
    assert len(agents) == 1
    r = tb("wait", first.stdout.strip(), "--timeout", "60", "--json", env=env)
    assert r.code == 0 and _jobs(r)[0]["state"] == "COMPLETED"
    from aifactory_cli.service.session import Service

    monkeypatch.setenv("AIFACTORY_PERSIST", "60")
    monkeypatch.setenv("AIFACTORY_ACCOUNT", ACCOUNT)
    monkeypatch.setenv("AIFACTORY_SSH_CONFIG", str(tmp_path / "ssh_config_empty"))  # as the CLI calls had
    with Service() as svc:
        transport = svc.backend("testbed").transport
        assert transport.run("true").ok
        assert transport.connections_opened == 0  # reused the agent's login
        transport.shutdown_agent()
