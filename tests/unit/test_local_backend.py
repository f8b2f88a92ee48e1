"""The embedded `local` site in-process: the runner (`backends.localrun.Runner`) run in this
process over a job dir, and `LocalBackend` submit/poll/cancel through the service."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import spec

from aifactory_cli.backends import localrun
from aifactory_cli.jobs.jobdir import CANCEL_FLAG, RUNNER, STATUS
from aifactory_cli.service.session import Service


@pytest.fixture(autouse=True)
def keep_signal_handlers() -> Iterator[None]:
    """Runner.run() installs SIGTERM/SIGINT handlers; pytest's own come back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def _jobdir(tmp_path: Path, script: str, name: str = "job", **conf: Any) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "job.sh").write_text(script)
    runner = {"job_id": 7, "name": name, "script": "job.sh", "array_size": 0, "max_parallel": None,
              "time_limit": 30, "tasks": 1, "cpus_per_task": 2, "depends_on": []}  # fmt: skip
    runner.update(conf)
    (d / RUNNER).write_text(json.dumps(runner))
    return d


def _status(d: Path) -> dict[str, Any]:
    return dict(json.loads((d / STATUS).read_text()))


def test_a_job_runs_with_slurm_like_environment(tmp_path: Path) -> None:
    d = _jobdir(tmp_path, 'echo "$SLURM_JOB_ID $SLURM_JOB_NAME $SLURM_CPUS_PER_TASK $SLURM_JOB_PARTITION"\n')
    localrun.Runner(d).run()
    st = _status(d)
    assert (st["state"], st["exit_code"]) == ("COMPLETED", 0)
    assert st["started_at"] and st["ended_at"] and st["tasks"]["0"]["state"] == "COMPLETED"
    assert (d / "stdout.log").read_text() == "7 job 2 local\n"
    assert localrun.cancel(d) is False  # already final


def test_an_array_with_a_failing_element(tmp_path: Path) -> None:
    script = 'echo "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT"; [ "$SLURM_ARRAY_TASK_ID" != 1 ] || exit 4\n'
    d = _jobdir(tmp_path, script, array_size=3, max_parallel=2)
    localrun.Runner(d).run()
    st = _status(d)
    assert st["state"] == "FAILED" and st["exit_code"] == 4  # the non-zero code wins
    tasks = {int(k): (t["state"], t["exit_code"]) for k, t in st["tasks"].items()}
    assert tasks == {0: ("COMPLETED", 0), 1: ("FAILED", 4), 2: ("COMPLETED", 0)}
    assert [(d / f"stdout.{i}.log").read_text() for i in range(3)] == ["0/3\n", "1/3\n", "2/3\n"]


def test_the_time_limit_ends_the_job(tmp_path: Path) -> None:
    d = _jobdir(tmp_path, "sleep 30\n", time_limit=0.3)
    localrun.Runner(d).run()
    st = _status(d)
    assert st["state"] == "TIMEOUT" and st["tasks"]["0"]["state"] == "TIMEOUT"


def test_dependencies(tmp_path: Path) -> None:
    failed = _jobdir(tmp_path, "true\n", name="dep_failed")
    (failed / STATUS).write_text(json.dumps({"state": "FAILED"}))
    done = _jobdir(tmp_path, "true\n", name="dep_done")
    (done / STATUS).write_text(json.dumps({"state": "COMPLETED"}))

    never = _jobdir(tmp_path, "echo ran\n", name="never", depends_on=[str(done), str(failed)])
    localrun.Runner(never).run()
    st = _status(never)
    assert (st["state"], st["reason"]) == ("CANCELLED", "DependencyNeverSatisfied")
    assert not (never / "stdout.log").exists()

    ok = _jobdir(tmp_path, "echo ran\n", name="ok", depends_on=[str(done)])
    localrun.Runner(ok).run()
    assert _status(ok)["state"] == "COMPLETED" and (ok / "stdout.log").read_text() == "ran\n"


def test_cancel_before_the_runner_started(tmp_path: Path) -> None:
    d = _jobdir(tmp_path, "echo ran\n")
    assert localrun.cancel(d) is False  # no status yet
    localrun.write_json_atomic(d / STATUS, {"state": "PENDING", "tasks": {}})
    assert localrun.cancel(d) is True
    assert (d / CANCEL_FLAG).exists() and _status(d)["state"] == "CANCELLED"
    localrun.Runner(d).run()  # sees the flag, launches nothing
    assert _status(d)["state"] == "CANCELLED" and not (d / "stdout.log").exists()


def test_main_needs_one_job_dir(capsys: pytest.CaptureFixture[str]) -> None:
    assert localrun.main([]) == 2 and "usage:" in capsys.readouterr().err
    assert localrun.pid_alive(None) is False and localrun.pid_alive(2**22 + 12345) is False


# --- through the service ---------------------------------------------------------------------------


def test_submit_poll_and_wait_on_the_local_site(aif_home: Path, tmp_path: Path) -> None:
    with Service() as svc:
        job = svc.submit(svc.prepare(spec(tmp_path, "loc", "run: echo local-$SLURM_JOB_ID; exit 3\n"), "local"))
        assert job.site == "local" and job.workdir and Path(job.workdir).is_dir()
        assert job.slurm_job_id == "1"  # the store's counter
        (done,) = svc.wait(jobs=[job], timeout=30, min_interval=0.05)
        assert (done.state, done.exit_code) == ("FAILED", 3)
        _, out = svc.logs(job.id)
        assert out == b"local-1\n"

        second = svc.submit(svc.prepare(spec(tmp_path, "slow", "run: sleep 30\n"), "local"))
        assert second.slurm_job_id == "2"
        svc.cancel([second.id])
        (cancelled,) = svc.wait(jobs=[second], timeout=30, min_interval=0.05)
        assert cancelled.state == "CANCELLED"


def test_poll_without_a_runner(aif_home: Path, tmp_path: Path) -> None:
    with Service() as svc:
        job = svc.submit(svc.prepare(spec(tmp_path), "local"))
        svc.wait(jobs=[job], timeout=30, min_interval=0.05)
        backend = svc.backend("local")
        d = Path(job.workdir or "")
        localrun.write_json_atomic(d / STATUS, {"state": "RUNNING", "runner_pid": 2**22 + 12345})
        assert backend.poll([job])[job.id].state == "UNKNOWN"
        assert backend.poll([job])[job.id].reason == "the local runner is gone"
        (d / STATUS).unlink()
        assert backend.poll([job])[job.id].reason == "no status file in the job dir"


def test_an_element_that_exits_between_two_looks_is_recorded_before_the_job_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner looked at each process to record its end, then again to decide the job had ended:
    an element that exited in between stayed RUNNING in a job summed up FAILED, exit 0 (seen in CI:
    "FAILED (3 completed, 1 running)"). Here each process says "running" at its first look only."""
    real_popen = localrun.subprocess.Popen

    class Late:
        def __init__(self, *a: Any, **k: Any) -> None:
            self.proc = real_popen(*a, **k)
            self.proc.wait()
            self.pid = self.proc.pid
            self.looks = 0

        def poll(self) -> int | None:
            self.looks += 1
            return None if self.looks == 1 else self.proc.returncode

        def wait(self, timeout: float | None = None) -> int:
            return self.proc.returncode

    monkeypatch.setattr(localrun.subprocess, "Popen", Late)
    d = _jobdir(tmp_path, '[ "$SLURM_ARRAY_TASK_ID" != 1 ] || exit 4\n', array_size=2, max_parallel=2)
    localrun.Runner(d).run()
    st = _status(d)
    assert {k: t["state"] for k, t in st["tasks"].items()} == {"0": "COMPLETED", "1": "FAILED"}
    assert (st["state"], st["exit_code"]) == ("FAILED", 4)
