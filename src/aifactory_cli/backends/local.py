"""The embedded `local` site: the job dir in the state dir, run by the local runner
(`backends.localrun`) on this machine in the background."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aifactory_cli import paths, states
from aifactory_cli.backends import localrun
from aifactory_cli.backends.base import Backend, Update
from aifactory_cli.errors import RemoteError
from aifactory_cli.jobs import jobdir
from aifactory_cli.jobs.model import Job, Task
from aifactory_cli.jobs.staging import UploadPlan, cache_missed, prelude_failure, stage_commands, tar_writer
from aifactory_cli.sites.profile import LoadedProfile, SiteProfile
from aifactory_cli.transport import Transport


def machine_gpus() -> dict[str, Any] | None:
    """This machine's GPUs as a profile `gpu` block, from `nvidia-smi -L` or `rocm-smi`; None when
    neither lists any. When the visible-devices variable is set (CUDA_VISIBLE_DEVICES or
    ROCR_VISIBLE_DEVICES), only the GPUs it names are counted: the local site hands out those."""
    for vendor, command, pattern, env in (
        ("nvidia", ["nvidia-smi", "-L"], r"^GPU (\d+): ([^(]+?)\s*(?:\(|$)", "CUDA_VISIBLE_DEVICES"),
        (
            "amd",
            ["rocm-smi", "--showproductname"],
            r"^GPU\[(\d+)\]\s*:\s*Card (?:series|SKU)\s*:\s*(.+?)\s*$",
            "ROCR_VISIBLE_DEVICES",
        ),
    ):
        if shutil.which(command[0]) is None:
            continue
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        found: dict[str, str] = {}
        for match in re.finditer(pattern, out, re.MULTILINE | re.IGNORECASE):
            found.setdefault(match.group(1), match.group(2).strip())
        if not found:
            continue
        visible = [d for d in os.environ.get(env, "").split(",") if d.strip()]
        count = min(len(visible), len(found)) if os.environ.get(env) is not None else len(found)
        if count == 0:
            return None
        return {"vendor": vendor, "model": next(iter(found.values())), "per_node": count, "visible_devices_env": env}
    return None


def with_machine_gpus(loaded: LoadedProfile) -> LoadedProfile:
    """The local profile with this machine's GPUs (when it has some and the profile names none)."""
    if loaded.profile.gpu is not None:
        return loaded
    gpu = machine_gpus()
    if gpu is None:
        return loaded
    merged = {**loaded.merged, "gpu": gpu}
    return LoadedProfile(SiteProfile.model_validate(merged), loaded.files, merged)


class LocalBackend(Backend):
    kind = "local"

    def __init__(self, loaded: LoadedProfile, transport: Transport, store_counter: Callable[[], int]) -> None:
        super().__init__(loaded, transport)
        self.next_id = store_counter

    def workdir_for(self, job: Job, account: str | None, user: str | None) -> str:
        return str(paths.state_dir() / "local" / "jobs" / f"{job.name}-{job.id}")

    def data_dir_for(self, account: str | None, user: str | None) -> str:
        return str(paths.state_dir() / "local" / "data")

    def jobs_root_for(self, account: str | None, user: str | None) -> tuple[str, int]:
        return str(paths.state_dir() / "local" / "jobs"), 1

    def cache_dir_for(self, workdir: str, key: str) -> str:
        return str(paths.state_dir() / "local" / "uploads" / key)

    def submit(
        self, job: Job, plan: UploadPlan, workdir: str, progress: Callable[[int], None] | None = None
    ) -> tuple[str, str]:
        directory = Path(workdir)
        paths.ensure_private_dir(directory.parent)
        paths.ensure_private_dir(directory)

        def command() -> str:
            return " && ".join(stage_commands(workdir, plan.cache_dir, plan.prelude))

        result = self.transport.run(command(), stdin=tar_writer(plan, progress))
        if cache_missed(result.rc, result.stderr):
            plan.send_everything()  # the prelude ran: it is not in the second command
            result = self.transport.run(command(), stdin=tar_writer(plan, progress))
        if not result.ok:
            failed = prelude_failure(result.stderr)
            if failed:
                raise RemoteError(
                    f"{failed}; nothing was submitted", "submit again: what is stored is not sent again", queued="no"
                )
            raise RemoteError(f"cannot stage files into {workdir}: {result.stderr.strip()}")
        meta = json.loads(plan.generated[jobdir.META][0])
        job_id = self.next_id()
        runner = {
            "job_id": job_id,
            "name": job.name,
            "script": jobdir.SCRIPT,
            "array_size": job.array_size,
            "max_parallel": meta.get("max_parallel"),
            "time_limit": meta["time_seconds"],
            "tasks": meta["tasks"],
            "cpus_per_task": meta["cpus_per_task"],
            "depends_on": meta.get("depends_on_dirs", []),
        }
        localrun.write_json_atomic(directory / jobdir.RUNNER, runner)
        localrun.write_json_atomic(directory / jobdir.STATUS, {"state": "PENDING", "tasks": {}})
        (directory / jobdir.SLURM_JOB_ID).write_text(f"{job_id}\n")
        localrun.start(directory)
        return str(job_id), str(directory)

    def poll(self, jobs: list[Job]) -> dict[str, Update]:
        out: dict[str, Update] = {}
        for job in jobs:
            if not job.workdir:
                continue
            status = localrun.read_status(Path(job.workdir))
            if status is None:
                out[job.id] = Update(state=states.UNKNOWN, reason="no status file in the job dir")
                continue
            state = status.get("state", states.UNKNOWN)
            reason = status.get("reason")
            if (
                state not in states.FINAL_STATES
                and status.get("runner_pid")
                and not localrun.pid_alive(status["runner_pid"])
            ):
                state, reason = states.UNKNOWN, "the local runner is gone"
            tasks = []
            if job.array_size:
                for key, t in sorted(status.get("tasks", {}).items(), key=lambda kv: int(kv[0])):
                    tasks.append(
                        Task(
                            task_id=int(key),
                            state=t.get("state", states.UNKNOWN),
                            slurm_state=t.get("state"),
                            exit_code=t.get("exit_code"),
                            started_at=t.get("started_at"),
                            ended_at=t.get("ended_at"),
                        )
                    )
            out[job.id] = Update(
                state=state,
                slurm_state=state,
                exit_code=status.get("exit_code"),
                reason=reason,
                started_at=status.get("started_at"),
                ended_at=status.get("ended_at"),
                tasks=tasks,
            )
        return out

    def ended(self, jobs: list[Job]) -> dict[str, bool]:
        """The runner's status file is on this machine and is the judge itself: read it."""
        return {job_id: u.state in states.FINAL_STATES for job_id, u in self.poll(jobs).items()}

    def cancel(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.workdir:
                localrun.cancel(Path(job.workdir))

    # --- steps inside a running job (exec, shell) ------------------------------------------------------

    def run_step(self, job: Job, preamble: str, argv: list[str]) -> int:
        """`argv` in the job dir with the job's environment: the one the local runner gave the job
        (`localrun.job_env`: its SLURM_* values), then the preamble (modules, the spec's env). A
        process of this machine, with this process's stdin, stdout and stderr (a terminal stays
        one): the local site's nodes are this machine."""
        workdir = Path(job.workdir or ".")
        env = localrun.job_env(workdir)
        try:
            return subprocess.call(["bash", "-c", preamble, "aif-exec", *argv], cwd=str(workdir), env=env)
        except OSError as exc:
            raise RemoteError(f"cannot start bash in {workdir}: {exc}") from exc
