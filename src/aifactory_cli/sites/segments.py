"""A checkpointed run's segments on a site (spec `checkpoint:`, `retries:`): how long each is, how
many the run's total time needs, and how the next one starts (a requeue of the same job, or a new
job depending on it where the site's profile says `requeue: false`). Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass

from aifactory_cli.errors import LimitError
from aifactory_cli.sites.profile import Partition, SiteProfile
from aifactory_cli.spec.model import JobSpec
from aifactory_cli.units import format_duration


@dataclass(frozen=True)
class SegmentPlan:
    segment_seconds: int  # each Slurm job's --time
    grace_seconds: int  # --signal=B:<signal>@<grace>
    signal: str
    total_seconds: int  # resources.time: the whole run
    retries: int
    requeue: bool  # the next segment is `scontrol requeue` of the same job (else a dependent sbatch)

    @property
    def count(self) -> int:
        """The most segments the run's total time needs (each reserves a full segment)."""
        return max(1, math.ceil(self.total_seconds / self.segment_seconds))

    @property
    def mode(self) -> str:
        return "requeue" if self.requeue else "chain"

    def summary(self) -> dict[str, object]:
        return {
            "segment": format_duration(self.segment_seconds),
            "grace_seconds": self.grace_seconds,
            "signal": self.signal,
            "segments": self.count,
            "total": format_duration(self.total_seconds),
            "retries": self.retries,
            "next_segment": self.mode,
        }


def plan(
    spec: JobSpec, profile: SiteProfile, pname: str | None, part: Partition | None, total: int
) -> SegmentPlan | None:
    """The segments of `spec` (None without `checkpoint:`); `total` is the run's whole time. The limit
    of a segment against the partition is checked with the partition's other limits (partition.py)."""
    ckpt = spec.checkpoint
    if ckpt is None:
        return None
    if profile.scheduler != "slurm":
        raise LimitError(
            f"site '{profile.name}' runs no segments: checkpoint: needs a Slurm site",
            f"drop it for this site (sites: {{{profile.name}: {{checkpoint: null}}}}), or run on a Slurm site",
        )
    if spec.array_size:
        raise LimitError(
            "checkpoint: with a matrix is not supported: each element would need its own segments",
            "run the long element as its own job, or drop checkpoint:",
        )
    segment = ckpt.segment_seconds or (part.max_time_seconds if part else None)
    if segment is None:
        raise LimitError(
            f"checkpoint.segment is not set and the time limit of '{pname}' on {profile.name} is not known "
            "(its sources do not say)",
            "set checkpoint.segment in the spec (e.g. segment: 12h)",
        )
    if ckpt.grace_seconds >= segment:
        raise LimitError(
            f"checkpoint.grace {format_duration(ckpt.grace_seconds)} is not shorter than a segment "
            f"({format_duration(segment)}, the limit of '{pname}')",
            "make checkpoint.grace a small part of the segment, or set checkpoint.segment",
        )
    return SegmentPlan(
        segment_seconds=min(segment, total),
        grace_seconds=ckpt.grace_seconds,
        signal=ckpt.signal,
        total_seconds=total,
        retries=spec.retries,
        requeue=profile.requeue,
    )


def time_problem(spec: JobSpec, pname: str, max_time: int | None) -> str | None:
    """Why the job's time does not fit partition `pname` (None when it does): without `checkpoint:`
    the whole time must; with it, one segment must (the total may be longer)."""
    if max_time is None:
        return None
    limit = f"the limit of '{pname}' ({format_duration(max_time)})"
    ckpt = spec.checkpoint
    if ckpt is not None:
        segment = ckpt.segment_seconds
        if segment is not None and segment > max_time:
            return f"checkpoint.segment {format_duration(segment)} is over {limit}"
        return None
    total = spec.resources.time_seconds
    if total is not None and total > max_time:
        return (
            f"time {format_duration(total)} is over {limit}; a longer run needs checkpoint: "
            "(segments the program saves and resumes from)"
        )
    return None
