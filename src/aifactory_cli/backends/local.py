"""The embedded `local` site: the job dir in the state dir, run by the local runner
(`backends.localrun`) on this machine in the background."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from aifactory_cli import paths, states
from aifactory_cli.backends import localrun
from aifactory_cli.backends.base import Backend, Update
from aifactory_cli.errors import RemoteError
from aifactory_cli.jobs import jobdir
from aifactory_cli.jobs.model import Job, Task
from aifactory_cli.jobs.staging import UploadPlan, cache_missed, stage_commands, tar_writer
from aifactory_cli.sites.profile import LoadedProfile
from aifactory_cli.transport import Transport


class LocalBackend(Backend):
    kind = "local"

    def __init__(self, loaded: LoadedProfile, transport: Transport, store_counter: Callable[[], int]) -> None:
        super().__init__(loaded, transport)
        self.next_id = store_counter

    def workdir_for(self, job: Job, account: str | None, user: str | None) -> str:
        return str(paths.state_dir() / "local" / "jobs" / f"{job.name}-{job.id}")

    def cache_dir_for(self, workdir: str, key: str) -> str:
        return str(paths.state_dir() / "local" / "uploads" / key)

    def submit(
        self, job: Job, plan: UploadPlan, workdir: str, progress: Callable[[int], None] | None = None
    ) -> tuple[str, str]:
        directory = Path(workdir)
        paths.ensure_private_dir(directory.parent)
        paths.ensure_private_dir(directory)
        command = " && ".join(stage_commands(workdir, plan.cache_dir))
        result = self.transport.run(command, stdin=tar_writer(plan, progress))
        if cache_missed(result.rc, result.stderr):
            plan.send_everything()
            result = self.transport.run(command, stdin=tar_writer(plan, progress))
        if not result.ok:
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

    def cancel(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.workdir:
                localrun.cancel(Path(job.workdir))
