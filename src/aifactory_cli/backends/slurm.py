"""The Slurm backend: a job dir on the site's file system and sbatch/squeue/sacct/scancel over the
site's transport (all their command text lives in `scheduler.slurm`)."""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Callable

from aifactory_cli import states
from aifactory_cli.backends.base import Backend, Update
from aifactory_cli.errors import RemoteError, SubmitRejected
from aifactory_cli.jobs import jobdir, segments
from aifactory_cli.jobs.datastore import site_path
from aifactory_cli.jobs.model import Job, Task
from aifactory_cli.jobs.staging import UploadPlan, cache_missed, prelude_failure, stage_commands, tar_writer
from aifactory_cli.scheduler import slurm, steps
from aifactory_cli.scheduler.slurm_site import SiteFacts
from aifactory_cli.sites.profile import LoadedProfile
from aifactory_cli.transport import Transport, to_shell
from aifactory_cli.transport.interactive import PtyRequest, Session


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


def _expected_start(job: Job, rows: dict[tuple[str, int | None], slurm.SlurmRow]) -> str | None:
    """An array's expected start: the earliest of its pending elements'."""
    found = [r.expected_start for (sid, _), r in rows.items() if sid == job.slurm_job_id and r.expected_start]
    return min(found) if found else None


def _row_update(row: slurm.SlurmRow) -> Update:
    return Update(
        state=row.state,
        slurm_state=row.raw_state,
        exit_code=row.exit_code,
        reason=row.reason,
        started_at=row.start,
        ended_at=row.end,
        expected_start=row.expected_start,
    )


class SlurmBackend(Backend):
    kind = "slurm"

    def __init__(
        self, loaded: LoadedProfile, transport: Transport, facts: Callable[[], SiteFacts | None] | None = None
    ) -> None:
        super().__init__(loaded, transport)
        # what `sites check` recorded about the site's Slurm (read when needed; None: never checked)
        self.facts = facts or (lambda: None)

    def light_poll(self, jobs: list[Job]) -> bool:
        """Whether squeue may be asked with --only-job-state: the site's Slurm has it (recorded by
        `sites check`, never guessed from a version) and every job is a plain job known to be
        running, so neither a pending reason nor an expected start is needed (sacct has the start).
        A job that went back to pending shows PENDING without its reason until the next poll."""
        if not jobs or any(j.state != states.RUNNING or j.array_size for j in jobs):
            return False
        facts = self.facts()
        return bool(facts and facts.only_job_state)

    def workdir_for(self, job: Job, account: str | None, user: str | None) -> str:
        template = self.profile.workdir
        values = {
            "job": f"{job.name}-{job.id}",
            "name": job.name,
            "site": job.site,
            "account": account or "noaccount",
            "user": user or "$USER",
            **self.profile.workdir_values(account or "noaccount"),  # account_lower, project, project_upper
        }
        if "{user}" in template and not user:
            user = self.remote_user()
            values["user"] = user
        path = template.format(**values)
        for prefix in ("$HOME/", "~/"):
            if path.startswith(prefix):
                path = path[len(prefix) :]  # relative: ssh commands start in $HOME
        return path

    def data_dir_for(self, account: str | None, user: str | None) -> str:
        """The profile's `data_dir` (default: `.data` beside the job dirs), placeholders filled."""
        template = self.profile.data_dir_template
        values = {"site": self.profile.name, "account": account or "noaccount", "user": user or "$USER"}
        values.update(self.profile.workdir_values(account or "noaccount"))
        if "{user}" in template and not user:
            values["user"] = self.remote_user()
        return site_path(template.format(**values))

    def jobs_root_for(self, account: str | None, user: str | None) -> tuple[str, int]:
        """`workdir` up to its first component with {job} or {name}, placeholders filled."""
        parts = self.profile.workdir.rstrip("/").split("/")
        cut = next((i for i, p in enumerate(parts) if "{job}" in p or "{name}" in p), len(parts) - 1)
        values = {"site": self.profile.name, "account": account or "noaccount", "user": user or "$USER"}
        values.update(self.profile.workdir_values(account or "noaccount"))
        template = "/".join(parts[:cut]) or "."
        if "{user}" in template and not user:
            values["user"] = self.remote_user()
        return site_path(template.format(**values)), len(parts) - cut

    def cache_dir_for(self, workdir: str, key: str) -> str:
        """The site-side upload cache: next to the job dirs, shared by the jobs of one spec dir."""
        return posixpath.join(posixpath.dirname(workdir.rstrip("/")) or ".", jobdir.UPLOAD_CACHE, key)

    def remote_user(self) -> str:
        user = self.transport.username
        if user:
            return user
        result = self.transport.run(["id", "-un"])
        return result.stdout.strip()

    def submit(
        self, job: Job, plan: UploadPlan, workdir: str, progress: Callable[[int], None] | None = None
    ) -> tuple[str, str]:
        try:
            self.transport.connect()
        except RemoteError as exc:
            exc.queued = "no"  # nothing was sent
            raise

        # One remote command: create the private job dir, unpack the tar stream (script, metadata,
        # changed uploads; unchanged ones come from the site-side cache), submit, and record the
        # Slurm id in the job dir. HUP is ignored so that a dropped connection after sbatch still
        # leaves the id on disk for `sync` and for the token lookup.
        def command() -> str:
            steps = [
                *stage_commands(workdir, plan.cache_dir, plan.prelude),
                "pwd -P",
                *slurm.submit_steps(jobdir.SCRIPT, jobdir.SLURM_JOB_ID),
            ]
            return "trap '' HUP PIPE; " + " && ".join(steps)

        result = self.transport.run(command(), stdin=tar_writer(plan, progress))
        if cache_missed(result.rc, result.stderr):
            plan.send_everything()  # the site's upload cache was purged: one more round trip
            result = self.transport.run(command(), stdin=tar_writer(plan, progress))
        lines = [ln for ln in result.stdout.strip().splitlines() if ln.strip()]
        failed = prelude_failure(result.stderr) if not result.ok and not lines else None
        if failed:
            raise RemoteError(
                f"{failed} (on {self.profile.name}); nothing was submitted",
                "submit again: what is stored is not sent again",
                queued="no",
            )
        if not result.ok and not slurm.sbatch_spoke(result.stderr) and not lines:
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
        runs = self._segments_of([j for j in jobs if j.extra.get("segmented") and j.workdir and j.slurm_job_id])
        ids = sorted({runs[j.id][1] if j.id in runs else j.slurm_job_id for j in jobs if j.slurm_job_id})
        if not ids:
            return {}
        # One round trip: squeue (the truth for live jobs: slurmdbd lags on pending reasons) and
        # sacct (the truth for ended jobs and exit codes), for all jobs of the site at once.
        result = self.transport.run(slurm.status_command(ids, only_job_state=self.light_poll(jobs)))
        queue_text, queue_rc, acct_text, acct_rc = slurm.split_status_output(result.stdout)
        if not result.ok:
            acct_rc = result.rc
        if acct_rc != 0 and queue_rc != 0:
            raise RemoteError(
                f"cannot read job states on {self.profile.name}: {result.stderr.strip() or 'exit ' + str(acct_rc)}",
                "is Slurm reachable from the login node? try `aifactory sites check " + self.profile.name + "`",
            )
        rows = slurm.merge_rows(
            slurm.parse_squeue(queue_text) if queue_rc == 0 else [],
            slurm.parse_sacct(acct_text) if acct_rc == 0 else [],
            acct_ok=acct_rc == 0,
        )
        for job in jobs:
            if job.extra.get("depends_on"):
                for (slurm_id, _task), found in rows.items():
                    if slurm_id == job.slurm_job_id:
                        slurm.killed_for_dependency(found, depends=True)
        out: dict[str, Update] = {}
        for job in jobs:
            if not job.slurm_job_id:
                continue
            if job.id in runs:
                out[job.id] = self._segmented(job, *runs[job.id], rows)
                continue
            if job.array_size and job.extra.get("packed"):
                out[job.id] = self._packed(job, rows.get((job.slurm_job_id, None)))
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
                    expected_start=_expected_start(job, rows),
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
                out[job.id] = _row_update(row)
        return out

    def _segments_of(self, jobs: list[Job]) -> dict[str, tuple[list[segments.Segment], str]]:
        """A checkpointed run's segments and current Slurm job, from its job dir (one round trip for
        all of them): {job id: (segments, current Slurm id)}; a dir not read keeps the stored id."""
        if not jobs:
            return {}
        result = self.transport.run(segments.read_command([j.workdir or "" for j in jobs]))
        read = segments.parse_read(result.stdout, len(jobs))
        out: dict[str, tuple[list[segments.Segment], str]] = {}
        for job, found in zip(jobs, read, strict=True):
            segs, current = found if found else ([], None)
            out[job.id] = (segs, current or job.slurm_job_id or "")
        return out

    def _segmented(
        self, job: Job, segs: list[segments.Segment], current: str, rows: dict[tuple[str, int | None], slurm.SlurmRow]
    ) -> Update:
        """One logical job for a checkpointed run: the log decides a run that ended, Slurm's state of
        its current job (requeued, or the chain's newest) one that goes on (jobs/segments.py)."""
        row = rows.get((current, None))
        base = _row_update(row) if row else Update(state=states.UNKNOWN)
        state = segments.combine(segs, current, base.state if row else None, base.reason)
        run = segments.view(segs)
        final = state in states.FINAL_STATES
        return Update(
            state=state,
            slurm_state=base.slurm_state,
            exit_code=run.exit_code if run.state else (base.exit_code if final else None),
            reason=run.reason or base.reason,
            started_at=segs[0].started_at if segs else base.started_at,
            ended_at=(segs[-1].ended_at or base.ended_at) if final and segs else base.ended_at,
            expected_start=base.expected_start if state == states.PENDING else None,
            slurm_job_id=current,
            segments=[s.to_json() for s in segs],
        )

    def _packed(self, job: Job, row: slurm.SlurmRow | None) -> Update:
        """A packed sweep (`pack: true`) is one Slurm job: its state is Slurm's; its elements' are
        from their exit-code files (exit_code.N, written as each element's step ends), else the job's."""
        update = self._vanished(job) if row is None else _row_update(row)
        codes: dict[int, int] = {}
        if job.workdir:
            result = self.transport.run(jobdir.element_codes_command(job.workdir))
            if result.ok:
                codes = jobdir.parse_element_codes(result.stdout)
        tasks = []
        for i in range(job.array_size):
            if i in codes:
                state = states.COMPLETED if codes[i] == 0 else states.FAILED
                tasks.append(Task(task_id=i, state=state, exit_code=codes[i], slurm_job_id=job.slurm_job_id))
            elif update.state == states.COMPLETED:  # the job ended well, but this element left no code
                tasks.append(Task(task_id=i, state=states.UNKNOWN, reason="no exit_code file"))
            else:
                tasks.append(Task(task_id=i, state=update.state, reason=update.reason))
        update.tasks = tasks
        return update

    def _vanished(self, job: Job) -> Update:
        """Neither sacct nor squeue knows the job: the exit-code file is the only other truth."""
        code = None
        if job.workdir:
            try:
                code = int(
                    self.transport.read_bytes(posixpath.join(job.workdir, jobdir.exit_code_name())).strip() or b"x"
                )
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
        # a checkpointed run: no segment may follow (the script checks the flag before it requeues or
        # submits the next), and its current job (a chain's newest segment) is cancelled with the stored one
        runs = [j for j in jobs if j.extra.get("segmented") and j.workdir]
        if runs:
            flags = " ".join(shlex.quote(posixpath.join(j.workdir or "", jobdir.CANCEL_FLAG)) for j in runs)
            self.transport.run(f"touch {flags}")
            ids = sorted({*ids, *(current for _, current in self._segments_of(runs).values() if current)})
        result = self.transport.run(slurm.scancel_command(ids))
        if not result.ok:
            raise RemoteError(f"scancel failed: {result.stderr.strip() or result.stdout.strip()}")

    # --- steps inside a running job (exec, shell) ------------------------------------------------------

    def job_nodes(self, job: Job) -> steps.JobNodes | None:
        """The job's state and nodes as squeue has them now (None: squeue no longer lists the job)."""
        result = self.transport.run(to_shell(steps.nodes_command(job.slurm_job_id or "")))
        if not result.ok and "Invalid job id" not in result.stderr:
            raise RemoteError(f"squeue failed on {self.profile.name}: {result.stderr.strip() or result.rc}")
        return steps.parse_nodes(result.stdout)

    def open_step(
        self, job: Job, preamble: str, argv: list[str], nodes: list[str], name: str, pty: PtyRequest | None = None
    ) -> Session:
        """`argv` as a step named `name` of the running job on `nodes` (one task each), streamed."""
        opener = getattr(self.transport, "open_session", None)
        if opener is None:
            raise RemoteError(f"the transport to {self.profile.name} cannot run interactive sessions")
        line = steps.step_command(job.slurm_job_id or "", preamble, argv, nodes=nodes, pty=pty is not None, name=name)
        session: Session = opener(line, pty)
        return session

    def cancel_step(self, job: Job, name: str) -> None:
        """Cancel the job's steps named `name` (best effort: the step may have ended meanwhile)."""
        self.transport.run(steps.cancel_step_command(job.slurm_job_id or "", name), timeout=20)
