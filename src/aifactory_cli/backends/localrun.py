"""The embedded `local` site's runner: runs a rendered script on this machine in the background,
like a tiny Slurm (array elements, concurrency limit, time limit, dependencies, cancel), and keeps
`status.json` in the job dir up to date.

Started detached by `start()`; the runner process is `python -m aifactory_cli.backends.localrun JOBDIR`.
Only the standard library (and the job-dir names, `jobs.jobdir`) is imported here: the runner must
start fast and stay small.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aifactory_cli.jobs.jobdir import CANCEL_FLAG, RUNNER, RUNNER_LOG, STATUS, log_name

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"}
KILL_WAIT = 5.0


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_status(jobdir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((jobdir / STATUS).read_text())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True


def free_port() -> int | None:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel's pick), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    except OSError:
        return None


def start(jobdir: Path) -> int:
    """Start the runner for `jobdir` detached from this process; return its pid."""
    log = open(jobdir / RUNNER_LOG, "ab")  # noqa: SIM115 - handed to the child
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])  # the dir that holds aifactory_cli/
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aifactory_cli.backends.localrun", str(jobdir)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        close_fds=True,
        env=env,
        cwd=str(jobdir),
    )
    log.close()
    return proc.pid


def cancel(jobdir: Path) -> bool:
    """Ask the runner to cancel; returns False if it was not running."""
    status = read_status(jobdir)
    if status is None:
        return False
    pid = status.get("runner_pid")
    if status.get("state") in FINAL:
        return False
    # The flag first: a runner that has not saved its pid yet checks it before launching anything.
    (jobdir / CANCEL_FLAG).touch()
    if pid and pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        return True
    status["state"] = "CANCELLED"
    status["ended_at"] = _now()
    write_json_atomic(jobdir / STATUS, status)
    return True


def job_env(jobdir: Path) -> dict[str, str]:
    """The environment the runner gives the job in `jobdir` (for `aifactory exec`/`shell` on the
    local site: the same SLURM_* values the job's script sees)."""
    return Runner(jobdir).env_for(None)


class Runner:
    def __init__(self, jobdir: Path) -> None:
        self.dir = jobdir
        self.conf = json.loads((jobdir / RUNNER).read_text())
        self.cancelled = False
        n = self.conf["array_size"] or 1
        self.tasks: dict[int, dict[str, Any]] = {i: {"state": "PENDING"} for i in range(n)}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.status: dict[str, Any] = {
            "state": "PENDING",
            "runner_pid": os.getpid(),
            "reason": None,
            "started_at": None,
            "ended_at": None,
            "exit_code": None,
            "tasks": self.tasks,
        }

    def save(self) -> None:
        write_json_atomic(self.dir / STATUS, self.status)

    def on_term(self, signum: int, frame: Any) -> None:
        self.cancelled = True

    def cancel_requested(self) -> bool:
        """SIGTERM arrived, or `cancel()` ran before this runner had saved its pid."""
        if not self.cancelled and (self.dir / CANCEL_FLAG).exists():
            self.cancelled = True
        return self.cancelled

    def env_for(self, task: int | None) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        c = self.conf
        env.update(
            SLURM_JOB_ID=str(c["job_id"]),
            SLURM_JOBID=str(c["job_id"]),
            SLURM_JOB_NAME=c["name"],
            SLURM_SUBMIT_DIR=str(self.dir),
            SLURM_NNODES="1",
            SLURM_JOB_NUM_NODES="1",
            SLURM_NTASKS=str(c["tasks"]),
            SLURM_NPROCS=str(c["tasks"]),
            SLURM_CPUS_PER_TASK=str(c["cpus_per_task"]),
            SLURM_JOB_NODELIST="localhost",
            SLURMD_NODENAME=socket.gethostname(),
            SLURM_JOB_PARTITION="local",
            SLURM_CLUSTER_NAME="local",
        )
        port = free_port()
        if port:  # the job's MASTER_PORT (launch contract); the script falls back on one from the job id
            env["AIF_LOCAL_MASTER_PORT"] = str(port)
        if task is not None:
            env.update(
                SLURM_ARRAY_JOB_ID=str(c["job_id"]),
                SLURM_ARRAY_TASK_ID=str(task),
                SLURM_ARRAY_TASK_COUNT=str(c["array_size"]),
                SLURM_ARRAY_TASK_MIN="0",
                SLURM_ARRAY_TASK_MAX=str(c["array_size"] - 1),
            )
        return env

    def wait_dependencies(self) -> bool:
        deps = [Path(d) for d in self.conf.get("depends_on", [])]
        if not deps:
            return True
        self.status["reason"] = "Dependency"
        self.save()
        while not self.cancel_requested():
            states = [(read_status(d) or {}).get("state") for d in deps]
            if any(s in FINAL and s != "COMPLETED" for s in states):
                self.status["reason"] = "DependencyNeverSatisfied"
                return False
            if all(s == "COMPLETED" for s in states):
                self.status["reason"] = None
                return True
            time.sleep(0.2)
        return False

    def launch(self, i: int) -> None:
        array = bool(self.conf["array_size"])
        task = i if array else None
        out = open(self.dir / log_name(task=task), "ab")  # noqa: SIM115
        err = open(self.dir / log_name(stderr=True, task=task), "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            ["bash", str(self.dir / self.conf["script"])],
            cwd=str(self.dir),
            env=self.env_for(i if array else None),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        out.close()
        err.close()
        self.procs[i] = proc
        self.tasks[i].update(state="RUNNING", started_at=_now(), pid=proc.pid)
        if not self.status["started_at"]:
            self.status["started_at"] = _now()
        self.status["state"] = "RUNNING"
        self.status["reason"] = None

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + KILL_WAIT
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs.values()):
            time.sleep(0.05)
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def finish_all(self, state: str) -> None:
        for t in self.tasks.values():
            if t["state"] not in FINAL:
                t["state"] = state
                t["ended_at"] = _now()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_term)
        if self.cancel_requested():
            self.finish_all("CANCELLED")
            self.status.update(state="CANCELLED", ended_at=_now())
            self.save()
            return
        self.save()
        if not self.wait_dependencies():
            self.finish_all("CANCELLED")
            self.status.update(state="CANCELLED", ended_at=_now())
            self.save()
            return
        limit = float(self.conf["time_limit"])
        parallel = int(self.conf.get("max_parallel") or max(1, os.cpu_count() or 1))
        queue = list(self.tasks)
        started = None
        timed_out = False
        while True:
            if self.cancel_requested():
                self.kill_all()
                self.finish_all("CANCELLED")
                break
            running = [i for i, p in self.procs.items() if p.poll() is None]
            while queue and len(running) < parallel:
                i = queue.pop(0)
                self.launch(i)
                running.append(i)
                self.save()
            if started is None:
                started = time.monotonic()
            for i, proc in self.procs.items():
                t = self.tasks[i]
                rc = proc.poll()
                if rc is not None and t["state"] == "RUNNING":
                    code = rc if rc >= 0 else 128 - rc
                    t.update(exit_code=code, ended_at=_now(), state="COMPLETED" if rc == 0 else "FAILED")
                    self.save()
            # ended only once each task's end is recorded above: a process that exits between that
            # pass and this check would otherwise stay RUNNING in a job summed up as ended
            if not queue and all(self.tasks[i]["state"] != "RUNNING" for i in self.procs):
                break
            if time.monotonic() - started > limit:
                timed_out = True
                self.kill_all()
                self.finish_all("TIMEOUT")
                break
            time.sleep(0.05)
        states = [t["state"] for t in self.tasks.values()]
        if self.cancelled:
            state = "CANCELLED"
        elif timed_out:
            state = "TIMEOUT"
        elif all(s == "COMPLETED" for s in states):
            state = "COMPLETED"
        else:
            state = "FAILED"
        codes = [t.get("exit_code") for t in self.tasks.values() if t.get("exit_code") is not None]
        self.status.update(
            state=state,
            ended_at=_now(),
            exit_code=max(codes, key=lambda c: c != 0) if codes else None,
        )
        self.save()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m aifactory_cli.backends.localrun JOBDIR", file=sys.stderr)
        return 2
    Runner(Path(argv[0])).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
