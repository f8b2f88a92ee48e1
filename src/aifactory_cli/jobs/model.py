"""What a job is: the plain records the store keeps and every layer above passes around."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from aifactory_cli.states import FINAL_STATES, LIVE_STATES


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class Task:
    task_id: int
    state: str
    slurm_job_id: str | None = None
    slurm_state: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    started_at: str | None = None
    ended_at: str | None = None


@dataclass
class Job:
    id: str
    token: str
    name: str
    site: str
    state: str
    created_at: str
    updated_at: str
    slurm_job_id: str | None = None
    slurm_state: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    workdir: str | None = None
    array_size: int = 0
    submitted_at: str | None = None
    started_at: str | None = None  # when it really started (None while pending)
    ended_at: str | None = None
    expected_start: str | None = None  # Slurm's estimate while pending (None once started)
    polled_at: float | None = None
    spec_path: str | None = None
    spec_json: str | None = None
    script: str | None = None
    profile_name: str | None = None
    profile_version: int | None = None
    profile_digest: str | None = None
    template_digest: str | None = None
    provenance_hash: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    tasks: list[Task] = field(default_factory=list)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def ref(self) -> str:
        return f"{self.site}:{self.slurm_job_id}" if self.slurm_job_id else self.id

    def to_json(self, provenance: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "site": self.site,
            "slurm_job_id": self.slurm_job_id,
            "state": self.state,
            "slurm_state": self.slurm_state,
            "exit_code": self.exit_code if self.is_final else None,  # none before the job has ended
            "reason": self.reason,
            "workdir": self.workdir,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "expected_start": self.expected_start,
            "token": self.token,
            "array_size": self.array_size,
        }
        if self.tasks:
            out["tasks"] = [{k: v for k, v in asdict(t).items()} for t in sorted(self.tasks, key=lambda t: t.task_id)]
        if self.extra.get("segmented"):  # a checkpointed run: its Slurm jobs (README, "Long runs")
            out["segments"] = self.extra.get("segments") or []
        if self.extra.get("depends_on"):
            out["depends_on"] = self.extra["depends_on"]
        if self.extra.get("data"):  # what its `data:` sent into the site's store (service/data.py)
            out["data"] = self.extra["data"]
        if self.extra.get("rerun_of"):  # `rerun`: the job (and sweep elements) this one runs again
            out["rerun_of"] = self.extra["rerun_of"]
        if provenance:
            out["provenance"] = {
                "spec_path": self.spec_path,
                "spec": json.loads(self.spec_json) if self.spec_json else None,
                "script": self.script,
                "profile": self.profile_name,
                "profile_version": self.profile_version,
                "profile_digest": self.profile_digest,
                "template_digest": self.template_digest,
                "hash": self.provenance_hash,
            }
        return out
