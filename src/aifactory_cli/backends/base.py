"""A site's backend: its transport (local or SSH) plus its scheduler (the local runner or Slurm).
Every remote step of one CLI command goes through one backend, so through one connection."""

from __future__ import annotations

import json
import posixpath
import shlex
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aifactory_cli import paths, states
from aifactory_cli.backends import localrun
from aifactory_cli.errors import RemoteError, SubmitRejected
from aifactory_cli.jobs.model import Job, Task
from aifactory_cli.jobs.staging import CACHE_MISS_RC, UploadPlan, stage_commands, tar_writer
from aifactory_cli.scheduler import slurm
from aifactory_cli.sites.profile import LoadedProfile
from aifactory_cli.transport import Transport, and_then

SCRIPT = "job.sh"
META = "aifactory.json"


@dataclass
class Update:
    """What the site says about one job now."""

    state: str
    slurm_state: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    tasks: list[Task] = field(default_factory=list)


class Backend:
    kind = "base"

    def __init__(self, loaded: LoadedProfile, transport: Transport) -> None:
        self.loaded = loaded
        self.profile = loaded.profile
        self.transport = transport

    # --- shared file operations (work over any transport) --------------------------------------

    def read_log(self, job: Job, stderr: bool = False, task: int | None = None, offset: int = 0) -> bytes:
        if not job.workdir:
            return b""
        stem = "stderr" if stderr else "stdout"
        name = f"{stem}.{task}.log" if (job.array_size and task is not None) else f"{stem}.log"
        try:
            return self.transport.read_bytes(posixpath.join(job.workdir, name), offset)
        except FileNotFoundError:
            return b""

    def list_files(self, job: Job) -> list[str]:
        if not job.workdir:
            return []
        result = self.transport.run(and_then(["cd", job.workdir], ["find", ".", "-type", "f"]))
        if not result.ok:
            raise RemoteError(f"cannot list the job dir {job.workdir}: {result.stderr.strip()}")
        return sorted(line[2:] for line in result.stdout.splitlines() if line.startswith("./"))

    def fetch(self, job: Job, files: list[str], dest: Path, progress: Callable[[int], None] | None = None) -> None:
        """Copy `files` (job-dir relative) into `dest` with one tar stream."""
        if not files or not job.workdir:
            return
        dest.mkdir(parents=True, exist_ok=True)
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "fetch.tar"
            self.transport.get_tar(job.workdir, files, archive, progress)  # type: ignore[attr-defined]
            with tarfile.open(archive) as tar:
                tar.extractall(dest, filter="data")

    def close(self) -> None:
        self.transport.close()

    # --- to implement ---------------------------------------------------------------------------

    def workdir_for(self, job: Job, account: str | None, user: str | None) -> str:
        raise NotImplementedError

    def cache_dir_for(self, workdir: str, key: str) -> str:
        raise NotImplementedError

    def submit(
        self, job: Job, plan: UploadPlan, workdir: str, progress: Callable[[int], None] | None = None
    ) -> tuple[str, str]:
        """Create the job dir, stage the plan, submit; return (scheduler job id, absolute workdir)."""
        raise NotImplementedError

    def poll(self, jobs: list[Job]) -> dict[str, Update]:
        raise NotImplementedError

    def cancel(self, jobs: list[Job]) -> None:
        raise NotImplementedError

    def find_submitted(self, jobs: list[Job]) -> dict[str, str | None]:
        """For jobs whose submission was interrupted: the scheduler id each one got, or None if
        it never reached the scheduler. One remote command: the job dirs' `slurm_job_id` files
        (written right after sbatch), and for Slurm the tokens in live jobs' comments."""
        marks = []
        for job in jobs:
            if job.workdir:
                path = shlex.quote(posixpath.join(job.workdir, "slurm_job_id"))
                marks.append(f"printf '%s ' {shlex.quote(job.id)}; cat {path} 2>/dev/null || echo -")
        command = "; ".join(marks) or "true"
        if self.kind == "slurm":
            # sbatch may have queued it even when it reported a failure (e.g. "Socket timed out"):
            # live jobs carry the token in their comment; ended ones are found by their job dir
            since = min(j.created_at for j in jobs)[:19]
            command += (
                "; printf '%s\\n' @@AIF-SQUEUE@@; squeue --me --states=all --noheader --format='%i|%k' 2>/dev/null"
                "; printf '%s\\n' @@AIF-SACCT@@; sacct --noheader --parsable2 --allocations "
                f"--starttime={shlex.quote(since)} --format=JobID,WorkDir 2>/dev/null; true"
            )
        result = self.transport.run(command)
        if not result.ok:
            raise RemoteError(f"cannot look up interrupted submissions: {result.stderr.strip()}")
        files_part, _, rest = result.stdout.partition("@@AIF-SQUEUE@@\n")
        queue_part, _, acct_part = rest.partition("@@AIF-SACCT@@\n")
        by_dir: dict[str, str] = {}
        for line in acct_part.splitlines():
            sid, _, workdir = line.strip().partition("|")
            if sid.split("_")[0].isdigit() and workdir:
                by_dir[workdir.rstrip("/")] = sid.split("_")[0]
        found: dict[str, str | None] = {}
        for line in files_part.splitlines():
            job_id, _, value = line.strip().partition(" ")
            found[job_id] = value.strip() if value.strip().isdigit() else None
        by_token = {}
        for line in queue_part.splitlines():
            sid, _, comment = line.strip().partition("|")
            token = slurm.token_of(comment)
            if token and sid.split("_")[0].isdigit():
                by_token[token] = sid.split("_")[0]
        for job in jobs:
            if found.get(job.id) is None and job.token in by_token:
                found[job.id] = by_token[job.token]
            if found.get(job.id) is None and job.workdir:
                rel = job.workdir.rstrip("/")
                match = [sid for d, sid in by_dir.items() if d == rel or d.endswith("/" + rel.lstrip("/"))]
                if match:
                    found[job.id] = match[-1]
            found.setdefault(job.id, None)
        return found


def _task_list(job: Job, rows: dict[tuple[str, int | None], slurm.SlurmRow]) -> list[Task]:
    tasks = []
    for i in range(job.array_size):
        row = rows.get((job.slurm_job_id or "", i))
        if row is None:
            tasks.append(Task(task_id=i, state=states.UNKNOWN, reason="not reported by Slurm"))
        else:
            tasks.append(
                Task(
                    task_id=i,
                    state=row.state,
                    slurm_state=row.raw_state,
                    exit_code=row.exit_code,
                    reason=row.reason,
                    started_at=row.start,
                    ended_at=row.end,
                    slurm_job_id=row.raw_id,
                )
            )
    return tasks


class SlurmBackend(Backend):
    kind = "slurm"

    def workdir_for(self, job: Job, account: str | None, user: str | None) -> str:
        template = self.profile.workdir
        values = {
            "job": f"{job.name}-{job.id}",
            "name": job.name,
            "site": job.site,
            "account": account or "noaccount",
            "user": user or "$USER",
        }
        if "{user}" in template and not user:
            user = self.remote_user()
            values["user"] = user
        path = template.format(**values)
        for prefix in ("$HOME/", "~/"):
            if path.startswith(prefix):
                path = path[len(prefix) :]  # relative: ssh commands start in $HOME
        return path

    def cache_dir_for(self, workdir: str, key: str) -> str:
        """The site-side upload cache: next to the job dirs, shared by the jobs of one spec dir."""
        return posixpath.join(posixpath.dirname(workdir.rstrip("/")) or ".", ".uploads", key)

    def remote_user(self) -> str:
        user = getattr(self.transport, "username", None)
        if user:
            return str(user)
        result = self.transport.run(["id", "-un"])
        return result.stdout.strip()

    def submit(
        self, job: Job, plan: UploadPlan, workdir: str, progress: Callable[[int], None] | None = None
    ) -> tuple[str, str]:
        connect = getattr(self.transport, "connect", None)
        if connect is not None:
            try:
                connect()
            except RemoteError as exc:
                exc.nothing_sent = True  # type: ignore[attr-defined]
                raise
        # One remote command: create the private job dir, unpack the tar stream (script, metadata,
        # changed uploads; unchanged ones come from the site-side cache), submit, and record the
        # Slurm id in the job dir. HUP is ignored so that a dropped connection after sbatch still
        # leaves the id on disk for `sync` and for the token lookup.
        steps = [
            *stage_commands(workdir, plan.cache_dir),
            "pwd -P",
            "_aif_id=$(" + " ".join(slurm.sbatch_command(SCRIPT)) + ")",
            "printf '%s\\n' \"$_aif_id\" > slurm_job_id",
            "printf '%s\\n' \"$_aif_id\"",
        ]
        command = "trap '' HUP PIPE; " + " && ".join(steps)
        result = self.transport.run(command, stdin=tar_writer(plan, progress))
        if result.rc == CACHE_MISS_RC and "AIF-CACHE-MISS" in result.stderr:
            plan.send_everything()  # the site's upload cache was purged: one more round trip
            result = self.transport.run(command, stdin=tar_writer(plan, progress))
        lines = [ln for ln in result.stdout.strip().splitlines() if ln.strip()]
        if not result.ok and "sbatch" not in result.stderr and not lines:
            if "{account}" in self.profile.workdir and job.extra.get("account"):
                account = job.extra["account"]
                raise SubmitRejected(
                    f"cannot create the job dir {workdir} on {self.profile.name}: {result.stderr.strip()}",
                    f"is the account '{account}' right? its project directory is missing or not yours "
                    f"(`aifactory sites check {self.profile.name}` lists your accounts)",
                )
            raise RemoteError(
                f"cannot create the job dir {workdir} on {self.profile.name}: "
                f"{result.stderr.strip() or 'exit ' + str(result.rc)}",
                "check the profile's workdir and your quota on the site",
            )
        absolute = lines[0] if lines else workdir
        if result.ok and len(lines) >= 2:
            job_id = slurm.parse_sbatch(result.__class__(0, lines[-1], result.stderr))
        else:
            job_id = slurm.parse_sbatch(result.__class__(result.rc or 1, "", result.stderr))
        return job_id, absolute

    def poll(self, jobs: list[Job]) -> dict[str, Update]:
        ids = sorted({j.slurm_job_id for j in jobs if j.slurm_job_id})
        if not ids:
            return {}
        # One round trip: squeue (the truth for live jobs: slurmdbd lags on pending reasons) and
        # sacct (the truth for ended jobs and exit codes), for all jobs of the site at once.
        result = self.transport.run(slurm.status_command(ids))
        queue_text, queue_rc, acct_text = slurm.split_status_output(result.stdout)
        if result.rc != 0 and queue_rc != 0:
            raise RemoteError(
                f"cannot read job states on {self.profile.name}: {result.stderr.strip() or 'exit ' + str(result.rc)}",
                "is Slurm reachable from the login node? try `aifactory sites check " + self.profile.name + "`",
            )
        rows = slurm.merge_rows(
            slurm.parse_squeue(queue_text) if queue_rc == 0 else [],
            slurm.parse_sacct(acct_text) if result.rc == 0 else [],
            acct_ok=result.rc == 0,
        )
        out: dict[str, Update] = {}
        for job in jobs:
            if not job.slurm_job_id:
                continue
            if job.array_size:
                tasks = _task_list(job, rows)
                state = states.summarise([t.state for t in tasks])
                codes = [t.exit_code for t in tasks if t.exit_code is not None]
                starts = [t.started_at for t in tasks if t.started_at]
                ends = [t.ended_at for t in tasks if t.ended_at]
                reasons = [t.reason for t in tasks if t.reason and t.state in (states.PENDING, states.FAILED)]
                out[job.id] = Update(
                    state=state,
                    slurm_state=",".join(sorted({t.slurm_state or "?" for t in tasks})),
                    exit_code=max(codes, key=lambda c: c != 0) if codes else None,
                    reason=reasons[0] if reasons else None,
                    started_at=min(starts) if starts else None,
                    ended_at=max(ends)
                    if ends and states.summarise([t.state for t in tasks]) in states.FINAL_STATES
                    else None,
                    tasks=tasks,
                )
                continue
            row = rows.get((job.slurm_job_id, None))
            if row is None:
                out[job.id] = self._vanished(job)
            else:
                out[job.id] = Update(
                    state=row.state,
                    slurm_state=row.raw_state,
                    exit_code=row.exit_code,
                    reason=row.reason,
                    started_at=row.start,
                    ended_at=row.end,
                )
        return out

    def _vanished(self, job: Job) -> Update:
        """Neither sacct nor squeue knows the job: the exit-code file is the only other truth."""
        code = None
        if job.workdir:
            try:
                code = int(self.transport.read_bytes(posixpath.join(job.workdir, "exit_code")).strip() or b"x")
            except (FileNotFoundError, ValueError):
                code = None
        if code is None:
            return Update(state=states.UNKNOWN, slurm_state=None, reason="not known to sacct or squeue")
        return Update(
            state=states.COMPLETED if code == 0 else states.FAILED,
            exit_code=code,
            reason="from the job's exit_code file",
        )

    def cancel(self, jobs: list[Job]) -> None:
        ids = sorted({j.slurm_job_id for j in jobs if j.slurm_job_id})
        if not ids:
            return
        result = self.transport.run(slurm.scancel_command(ids))
        if not result.ok:
            raise RemoteError(f"scancel failed: {result.stderr.strip() or result.stdout.strip()}")


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
        jobdir = Path(workdir)
        paths.ensure_private_dir(jobdir.parent)
        paths.ensure_private_dir(jobdir)
        command = " && ".join(stage_commands(workdir, plan.cache_dir))
        result = self.transport.run(command, stdin=tar_writer(plan, progress))
        if result.rc == CACHE_MISS_RC and "AIF-CACHE-MISS" in result.stderr:
            plan.send_everything()
            result = self.transport.run(command, stdin=tar_writer(plan, progress))
        if not result.ok:
            raise RemoteError(f"cannot stage files into {workdir}: {result.stderr.strip()}")
        meta = json.loads(plan.generated[META][0])
        job_id = self.next_id()
        runner = {
            "job_id": job_id,
            "name": job.name,
            "script": SCRIPT,
            "array_size": job.array_size,
            "max_parallel": meta.get("max_parallel"),
            "time_limit": meta["time_seconds"],
            "tasks": meta["tasks"],
            "cpus_per_task": meta["cpus_per_task"],
            "depends_on": meta.get("depends_on_dirs", []),
        }
        localrun.write_json_atomic(jobdir / localrun.RUNNER, runner)
        localrun.write_json_atomic(jobdir / localrun.STATUS, {"state": "PENDING", "tasks": {}})
        (jobdir / "slurm_job_id").write_text(f"{job_id}\n")
        localrun.start(jobdir)
        return str(job_id), str(jobdir)

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
