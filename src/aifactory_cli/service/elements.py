"""The elements of a sweep (`matrix:`) as users name them: by index and by values.

A job's elements come from the spec it was submitted with (its provenance), so `status`, `logs`,
`fetch` and `rerun` say "element 3 (LR=-1)" without the spec file at hand."""

from __future__ import annotations

import json
import re

from aifactory_cli.errors import BadInput
from aifactory_cli.jobs.model import Job

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def values_of(job: Job) -> list[dict[str, str]]:
    """Each array element's values (index -> {KEY: value}); [] for a plain job or an unknown spec."""
    if not job.array_size or not job.spec_json:
        return []
    try:
        matrix = json.loads(job.spec_json).get("matrix")
    except (ValueError, AttributeError):
        return []
    if isinstance(matrix, list):
        return [{str(k): str(v) for k, v in e.items()} for e in matrix if isinstance(e, dict)]
    if isinstance(matrix, dict) and matrix:
        import itertools

        keys = list(matrix)
        return [dict(zip(keys, map(str, combo), strict=True)) for combo in itertools.product(*matrix.values())]
    return []


def values_text(values: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())


def describe(job: Job, task: int) -> str:
    """`element 3 (LR=-1)`."""
    values = values_of(job)
    text = values_text(values[task]) if 0 <= task < len(values) else ""
    return f"element {task}" + (f" ({text})" if text else "")


def label(job: Job, task: int) -> str:
    """A file-name-safe name for element `task`: `3_LR=-1` (fetch puts its files under it)."""
    values = values_of(job)
    parts = [str(task)]
    if 0 <= task < len(values):
        parts += [f"{k}={v}" for k, v in values[task].items()]
    return _UNSAFE.sub("-", "_".join(parts))[:120]


def select(job: Job, wanted: list[str]) -> list[int]:
    """Element indexes from `--task` words: an index (`3`), a range (`0-2`) or values (`LR=-1`, all
    given pairs must match). BadInput names the job's elements when a word matches none."""
    if not job.array_size:
        raise BadInput(f"job {job.id} ({job.name}) is not a sweep: it has no elements", "leave out --task")
    values = values_of(job)
    chosen: list[int] = []
    for word in wanted:
        found = _match(job, values, word.strip())
        if not found:
            listing = ", ".join(describe(job, i) for i in range(min(job.array_size, 8)))
            more = ", ..." if job.array_size > 8 else ""
            raise BadInput(
                f"job {job.id} ({job.name}) has no element {word!r}",
                f"its elements: {listing}{more}; give an index, a range like 0-2, or values like KEY=VALUE",
            )
        chosen += [i for i in found if i not in chosen]
    return chosen


def _match(job: Job, values: list[dict[str, str]], word: str) -> list[int]:
    if word.isdigit():
        return [int(word)] if int(word) < job.array_size else []
    if re.fullmatch(r"\d+-\d+", word):
        a, b = (int(x) for x in word.split("-"))
        return [i for i in range(a, b + 1) if i < job.array_size]
    pairs = [p.partition("=") for p in word.split(",")]
    if not pairs or any(not eq for _, eq, _ in pairs):
        return []
    return [i for i, v in enumerate(values) if all(v.get(k.strip()) == val.strip() for k, _, val in pairs)]
