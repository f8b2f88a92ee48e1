"""`checkpoint:` of a job spec: a run longer than a partition allows, as segments of one logical job.

The batch script (templates/slurm/base.sh.j2, block `segments`) signals the program `grace` before a
segment's time runs out; the program saves its state to `$AIF_CHECKPOINT_DIR` and exits, and the
script starts the next segment (a requeue, or a dependent job where the site allows no requeue)
while the run's total time (`resources.time`) lasts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aifactory_cli.units import parse_duration

# The signals a program may ask for. USR1 is the default (the issue's, Lightning's requeue_signal);
# submitit uses USR2 because "NCCL may catch USR1": a program that sees that clash sets USR2.
SIGNALS = ("USR1", "USR2", "TERM", "INT", "HUP", "URG")
DEFAULT_GRACE = "10m"


class Checkpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    segment: str | int | None = Field(
        None, description="length of one segment (default: the partition's max time); 2d, 12h, 1:00:00"
    )
    grace: str | int = Field(
        DEFAULT_GRACE, description="the program is signalled this long before a segment ends (10m, 90s)"
    )
    signal: Literal["USR1", "USR2", "TERM", "INT", "HUP", "URG"] = Field(
        "USR1", description="the signal the program gets (SIGUSR1 by default; USR2 if NCCL takes USR1)"
    )

    @field_validator("signal", mode="before")
    @classmethod
    def _signal(cls, v: Any) -> Any:
        if isinstance(v, str) and v.upper().removeprefix("SIG") in SIGNALS:
            return v.upper().removeprefix("SIG")
        return v

    @field_validator("segment", "grace")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if v is not None:
            parse_duration(v)
        return v

    @model_validator(mode="after")
    def _grace_in_segment(self) -> Checkpoint:
        if self.segment is not None and self.grace_seconds >= parse_duration(self.segment):
            raise ValueError(
                f"checkpoint.grace {self.grace} is not shorter than checkpoint.segment {self.segment}: "
                "the program would be signalled before its segment starts; make grace a small part of it"
            )
        return self

    @property
    def segment_seconds(self) -> int | None:
        return parse_duration(self.segment) if self.segment is not None else None

    @property
    def grace_seconds(self) -> int:
        return parse_duration(self.grace)
