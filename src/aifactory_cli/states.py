"""The contract's job states, and how Slurm's states map onto them."""

from __future__ import annotations

PREPARED = "PREPARED"
PENDING = "PENDING"
RUNNING = "RUNNING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
TIMEOUT = "TIMEOUT"
OUT_OF_MEMORY = "OUT_OF_MEMORY"
NODE_FAIL = "NODE_FAIL"
PREEMPTED = "PREEMPTED"
UNKNOWN = "UNKNOWN"

ALL_STATES = (
    PREPARED,
    PENDING,
    RUNNING,
    COMPLETED,
    FAILED,
    CANCELLED,
    TIMEOUT,
    OUT_OF_MEMORY,
    NODE_FAIL,
    PREEMPTED,
    UNKNOWN,
)
FINAL_STATES = frozenset({COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED})
LIVE_STATES = frozenset({PREPARED, PENDING, RUNNING, UNKNOWN})

# Slurm's job state names (squeue %T / sacct State, first word) -> contract state
_SLURM_MAP = {
    "PENDING": PENDING,
    "CONFIGURING": PENDING,
    "REQUEUED": PENDING,
    "REQUEUE_HOLD": PENDING,
    "REQUEUE_FED": PENDING,
    "RESV_DEL_HOLD": PENDING,
    "SUSPENDED": RUNNING,
    "RUNNING": RUNNING,
    "COMPLETING": RUNNING,
    "STAGE_OUT": RUNNING,
    "SIGNALING": RUNNING,
    "RESIZING": RUNNING,
    "STOPPED": RUNNING,
    "COMPLETED": COMPLETED,
    "FAILED": FAILED,
    "BOOT_FAIL": NODE_FAIL,
    "DEADLINE": TIMEOUT,
    "CANCELLED": CANCELLED,
    "TIMEOUT": TIMEOUT,
    "OUT_OF_MEMORY": OUT_OF_MEMORY,
    "NODE_FAIL": NODE_FAIL,
    "PREEMPTED": PREEMPTED,
    "REVOKED": CANCELLED,
    "SPECIAL_EXIT": FAILED,
}

# squeue's compact codes (%t)
_SHORT = {
    "PD": "PENDING",
    "R": "RUNNING",
    "CG": "COMPLETING",
    "CD": "COMPLETED",
    "F": "FAILED",
    "CA": "CANCELLED",
    "TO": "TIMEOUT",
    "OOM": "OUT_OF_MEMORY",
    "NF": "NODE_FAIL",
    "PR": "PREEMPTED",
    "S": "SUSPENDED",
    "CF": "CONFIGURING",
    "BF": "BOOT_FAIL",
    "DL": "DEADLINE",
    "RQ": "REQUEUED",
    "SE": "SPECIAL_EXIT",
    "ST": "STOPPED",
    "RV": "REVOKED",
    "SO": "STAGE_OUT",
    "RS": "RESIZING",
}


def from_slurm(raw: str) -> str:
    """Contract state for a raw Slurm state: `CANCELLED by 1001` -> CANCELLED; `PD` -> PENDING.

    Anything unknown is UNKNOWN, never COMPLETED.
    """
    word = raw.strip().split(" ", 1)[0].rstrip("+").upper() if raw else ""
    word = _SHORT.get(word, word)
    return _SLURM_MAP.get(word, UNKNOWN)


def summarise(states: list[str]) -> str:
    """One state for an array job from its tasks' states."""
    if not states:
        return UNKNOWN
    s = set(states)
    if s == {COMPLETED}:
        return COMPLETED
    if RUNNING in s:
        return RUNNING
    if s & {PENDING, PREPARED}:
        return PENDING if not (s & {UNKNOWN}) else UNKNOWN
    if UNKNOWN in s:
        return UNKNOWN
    for worst in (NODE_FAIL, OUT_OF_MEMORY, TIMEOUT, FAILED, PREEMPTED, CANCELLED):
        if worst in s:
            return worst
    return UNKNOWN
