"""Slurm, about the site rather than one job: what `sites check` asks, what `sites add --from-live`
reads (`scontrol show partition/node`), `plan`'s `sbatch --test-only` and `usage`'s sacct. Pure
builders and parsers like `slurm` (tested on output recorded from the test bed in tests/data/)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from aifactory_cli.scheduler.slurm import sbatch_command
from aifactory_cli.transport import batch

_CHECKS = {
    "version": "sbatch --version",
    "partitions": "scontrol show partition --oneliner",
    "accounts": 'sacctmgr --noheader --parsable2 show associations user="$(id -un)" format=Account',
    "sacct": "sacct --noheader --allocations --starttime=now-1hour --format=JobID",
    # each partition's generic resources, one line per node group: `standard-g|gpu:mi250:8(S:0-7)`
    "gres": 'sinfo --noheader --format="%R|%G"',
    # what the site's Slurm can do, asked rather than inferred from its version (a site may patch or
    # configure Slurm, e.g. JUPITER's psslurm): each probe lists nothing (BOOT_FAIL jobs are rare)
    "only_job_state": "squeue --only-job-state --noheader --me --states=BOOT_FAIL",  # from 23.11
    "json": "squeue --json --me --states=BOOT_FAIL >/dev/null",  # needs the data_parser plugins
    # the controller's version (sbatch --version is the login node's client) and whether batch jobs
    # may be requeued (slurm.conf JobRequeue)
    "config": "scontrol show config | grep -E '^(SLURM_VERSION|JobRequeue) '",
}

# a probe that failed for one of these reasons says nothing about the feature
_UNREACHABLE = ("unable to contact", "socket timed out", "not responding", "connection refused", "command not found")


@dataclass(frozen=True)
class SiteFacts:
    """What `sites check` learnt about a site's Slurm; None: not known (the probe could not tell)."""

    slurm_version: str | None  # the controller's (scontrol show config), else the client's (sbatch --version)
    client_version: str | None = None
    only_job_state: bool | None = None  # `squeue --only-job-state` (Slurm 23.11+)
    json_output: bool | None = None  # `squeue --json` works
    requeue: bool | None = None  # slurm.conf JobRequeue=1: batch jobs are requeueable by default
    checked_at: str | None = None  # when `sites check` asked (UTC, ISO 8601)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SiteFacts:
        """From a stored record; keys this version does not know are ignored."""
        known = {f: data[f] for f in cls.__dataclass_fields__ if f in data}
        return cls(**known)  # type: ignore[arg-type]


def slurm_version(text: str) -> str | None:
    """`slurm-wlm 22.05.8`, `slurm 24.11.5` or `SLURM_VERSION = 24.11.5` -> the version number."""
    m = re.search(r"\b(\d+\.\d+(?:\.\d+)?)\b", text)
    return m.group(1) if m else None


def _probe(section: tuple[str, int] | None) -> bool | None:
    if section is None:
        return None
    text, rc = section
    if rc == 0:
        return True
    return None if any(k in text.lower() for k in _UNREACHABLE) else False


def parse_site_facts(sections: dict[str, tuple[str, int]], checked_at: str | None = None) -> SiteFacts:
    """The facts in `split_sections(...)` of `check_command`'s output."""
    text, rc = sections.get("version", ("", 1))
    client = slurm_version(text) if rc == 0 else None
    config = dict(re.findall(r"^(\w+)\s*=\s*(\S*)", sections.get("config", ("", 1))[0], re.M))
    requeue = config.get("JobRequeue")
    return SiteFacts(
        slurm_version=slurm_version(config.get("SLURM_VERSION", "")) or client,
        client_version=client,
        only_job_state=_probe(sections.get("only_job_state")),
        json_output=_probe(sections.get("json")),
        requeue=None if requeue not in ("0", "1") else requeue == "1",
        checked_at=checked_at,
    )


def describe_facts(facts: SiteFacts) -> str:
    """One line for `sites check`."""

    def yes(value: bool | None) -> str:
        return "unknown" if value is None else "yes" if value else "no"

    client = f" (client {facts.client_version})" if facts.client_version not in (None, facts.slurm_version) else ""
    return (
        f"Slurm {facts.slurm_version or 'unknown'}{client}; squeue --only-job-state: {yes(facts.only_job_state)}; "
        f"JSON output: {yes(facts.json_output)}; requeue (JobRequeue): {yes(facts.requeue)}"
    )


def check_command() -> str:
    """Everything `sites check` needs, in one remote command (sites like JSC limit connections);
    each part's errors are part of its output."""
    return batch.command({name: f"{cmd} 2>&1" for name, cmd in _CHECKS.items()})


def split_sections(text: str) -> dict[str, tuple[str, int]]:
    """{check: (output, exit code)} from `check_command`'s stdout."""
    return {s.name: (s.output, s.rc) for s in batch.split(text) if s.name in _CHECKS}


def live_command() -> str:
    """What `sites add --from-live` reads: every partition and every node, in one round trip."""
    return batch.command({"partitions": "scontrol show partition --oneliner", "nodes": "scontrol show node --oneliner"})


def split_live_output(text: str) -> tuple[str, str] | None:
    """(partitions text, nodes text) from `live_command`'s stdout; None if either failed."""
    parts = batch.sections(text)
    if not all(name in parts and parts[name].ok for name in ("partitions", "nodes")):
        return None
    return parts["partitions"].output, parts["nodes"].output


def _oneliner(text: str, key: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if key in fields:
            out[fields[key]] = fields
    return out


def parse_partitions(text: str) -> dict[str, dict[str, str]]:
    """`scontrol show partition --oneliner` -> {name: {key: value}}."""
    return _oneliner(text, "PartitionName")


def parse_nodes(text: str) -> dict[str, dict[str, str]]:
    """`scontrol show node --oneliner` -> {name: {key: value}}."""
    return _oneliner(text, "NodeName")


def gres_gpus(gres: str) -> tuple[int, str | None]:
    """`gpu:mi250:8(S:0)` -> (8, 'mi250'); `(null)` -> (0, None)."""
    total, model = 0, None
    for item in gres.split(","):
        m = re.match(r"gpu(?::([^:(]+))?:(\d+)", item)
        if m:
            total += int(m.group(2))
            model = model or m.group(1)
    return total, model


def parse_partition_gpus(text: str) -> dict[str, set[int]]:
    """`sinfo --format="%R|%G"` -> {partition: the GPU counts its nodes have}."""
    out: dict[str, set[int]] = {}
    for line in text.splitlines():
        name, sep, gres = line.strip().partition("|")
        if sep:
            out.setdefault(name, set()).add(gres_gpus(gres)[0])
    return out


def test_only_command() -> list[str]:
    """`sbatch --test-only` for a script on stdin: when and where the job would start."""
    return sbatch_command(None, test_only=True)


_START = re.compile(r"to start at (\S+) using (\d+) processors on nodes (\S+) in partition (\S+)")


def parse_test_only(stderr: str) -> dict[str, str] | None:
    """`sbatch --test-only` prints (on stderr) `sbatch: Job N to start at T using P processors on
    nodes N in partition P`."""
    m = _START.search(stderr)
    if not m:
        return None
    return {"start": m.group(1), "processors": m.group(2), "nodes": m.group(3), "partition": m.group(4)}


USAGE_FIELDS = ("JobID", "Partition", "NNodes", "ElapsedRaw", "AllocTRES", "State")


@dataclass
class UsageRow:
    """One allocation of `sacct --format=<USAGE_FIELDS>`."""

    partition: str
    nodes: int
    seconds: int
    tres: dict[str, str]
    state: str


def usage_command(since: dt.date) -> list[str]:
    """The user's allocations since `since`, with what each one was given (AllocTRES)."""
    return [
        "sacct",
        "--noheader",
        "--parsable2",
        "--allocations",
        f"--starttime={since.isoformat()}",
        f"--format={','.join(USAGE_FIELDS)}",
    ]


def parse_usage(text: str) -> list[UsageRow]:
    rows = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < len(USAGE_FIELDS) or not parts[3].isdigit():
            continue
        _, partition, nnodes, elapsed, tres, state = parts[: len(USAGE_FIELDS)]
        if nnodes and not nnodes.isdigit():
            continue
        pairs = dict(item.split("=", 1) for item in tres.split(",") if "=" in item)
        rows.append(UsageRow(partition, int(nnodes or 1), int(elapsed), pairs, state))
    return rows
