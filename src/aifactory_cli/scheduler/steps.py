"""Slurm steps inside a running job (`aifactory exec`, `aifactory shell`) and a job's node list:
pure builders of the command text and parsers of Slurm's output (tested on output recorded on the
test bed, Slurm 22.05).

- The nodes: `squeue -j ID -h -o %T|%N` gives the state and the compressed host list
  (`nid[005000-005001]`); `expand_hostlist` expands it here, as `scontrol show hostnames` would,
  without another round trip.
- A step: `srun --jobid=ID --overlap` (the step shares the CPUs of the job's running steps, as
  LUMI documents for `srun --overlap --pty --jobid=<id> $SHELL`), one task on one node (`-w NODE`),
  or one task on each node (`--all-nodes`, with `--label`: the task number, mapped back to its
  node by `relabel`). The command runs as `bash -c PREAMBLE aif-exec WORD...`: the preamble
  (the job's dir, modules and environment) is one quoted word and each word of the user's command
  stays one word (`"$@"`), so nothing the user typed is parsed by a shell on the way.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aifactory_cli import states

NODES_FORMAT = "%T|%N"


def nodes_command(slurm_job_id: str) -> list[str]:
    """squeue for the job's state and (compressed) node list."""
    return ["squeue", "--noheader", f"--jobs={slurm_job_id}", f"--format={NODES_FORMAT}"]


@dataclass
class JobNodes:
    raw_state: str
    state: str
    nodes: list[str]


def parse_nodes(text: str) -> JobNodes | None:
    """`RUNNING|nid[005000-005001]` -> JobNodes; None when squeue printed no row (the job is gone)."""
    for line in text.splitlines():
        raw_state, sep, hostlist = line.strip().partition("|")
        if not sep:
            continue
        nodes = [] if hostlist.strip() in ("", "(null)", "n/a") else expand_hostlist(hostlist.strip())
        return JobNodes(raw_state, states.from_slurm(raw_state), nodes)
    return None


_RANGE = re.compile(r"^(\d+)-(\d+)$")


def _split_top(text: str) -> list[str]:
    """`a[1-2],b,c[3,5]` -> [`a[1-2]`, `b`, `c[3,5]`]: commas outside brackets separate hosts."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p]


def _expand_one(pattern: str) -> list[str]:
    m = re.search(r"\[([^\[\]]*)\]", pattern)
    if m is None:
        return [pattern]
    head, tail = pattern[: m.start()], pattern[m.end() :]
    out: list[str] = []
    for item in m.group(1).split(","):
        r = _RANGE.match(item.strip())
        if r:
            lo, hi = r.group(1), r.group(2)
            width = len(lo) if len(lo) > 1 and lo.startswith("0") else 0
            values = [str(n).zfill(width) for n in range(int(lo), int(hi) + 1)]
        else:
            values = [item.strip()]
        for value in values:
            out.extend(_expand_one(head + value + tail))
    return out


def expand_hostlist(hostlist: str) -> list[str]:
    """A Slurm host list as `scontrol show hostnames` expands it: `nid[005000-005002,005007],x1`
    -> nid005000, nid005001, nid005002, nid005007, x1 (zero padding kept; several bracket groups
    in one name, `r[1-2]n[01-02]`, expand in order)."""
    out: list[str] = []
    for part in _split_top(hostlist.strip()):
        out.extend(_expand_one(part))
    return out


# --- steps ---------------------------------------------------------------------------------------------


def step_command(
    slurm_job_id: str,
    preamble: str,
    argv: Sequence[str],
    *,
    nodes: Sequence[str],
    pty: bool = False,
    name: str | None = None,
) -> str:
    """The shell line that runs `argv` as a step of job `slurm_job_id`: on `nodes[0]` alone, or one
    task on each of `nodes` (more than one: labelled, see `relabel`). `preamble` is shell text run
    first in the step (it ends by running `"$@"`). `name`: the step's name (`cancel_step_command`)."""
    count = len(nodes)
    if count < 1:
        raise ValueError("a step needs at least one node")
    srun = ["srun", f"--jobid={slurm_job_id}", "--overlap", f"--nodes={count}", f"--ntasks={count}"]
    if name:
        srun += [f"--job-name={name}"]
    if count > 1:
        srun += ["--ntasks-per-node=1", "--label"]
    srun += [f"--nodelist={','.join(nodes)}"]
    if pty:
        srun += ["--pty"]
    return shlex.join([*srun, "bash", "-c", preamble, "aif-exec", *argv])


def cancel_step_command(slurm_job_id: str, name: str) -> str:
    """Cancel the steps named `name` of the job (the step of an `exec` whose client was interrupted:
    closing the SSH channel alone leaves srun running until it next writes)."""
    squeue = ["squeue", "--steps", "--noheader", f"--jobs={slurm_job_id}", "--format=%i|%j"]
    awk = ["awk", "-F|", "-v", f"n={name}", "$2 == n {print $1}"]
    return f"{shlex.join(squeue)} | {shlex.join(awk)} | xargs -r scancel"


def shell_argv() -> list[str]:
    """What `aifactory shell` runs in its step: the user's login shell on the node, interactive
    (`$SHELL`, bash when unset; `-i` so that it reads its rc file and prompts)."""
    return ["sh", "-c", 'exec "${SHELL:-/bin/bash}" -i']


_LABEL = re.compile(rb"^\s*(\d+): ?")


def relabel(line: bytes, nodes: Sequence[str]) -> bytes:
    """srun --label's `N: text` as `NODE: text` (task N of a one-task-per-node step runs on the N-th
    node of the step's node list); other lines are kept as they are."""
    m = _LABEL.match(line)
    if m is None:
        return line
    index = int(m.group(1))
    if index >= len(nodes):
        return line
    return nodes[index].encode() + b": " + line[m.end() :]


class LineLabeller:
    """Feeds bytes, passes whole lines through `relabel` to `sink` (a partial last line at `flush`)."""

    def __init__(self, nodes: Sequence[str], sink: Callable[[bytes], object]) -> None:
        self.nodes = list(nodes)
        self.sink = sink
        self.buffer = b""

    def feed(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        if lines:
            self.sink(b"".join(relabel(line, self.nodes) + b"\n" for line in lines))

    def flush(self) -> None:
        if self.buffer:
            rest, self.buffer = self.buffer, b""
            self.sink(relabel(rest, self.nodes))
