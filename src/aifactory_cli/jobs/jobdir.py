"""The job-directory contract, written once: what aifactory, the batch script and the local runner
put in a job dir, and what status, logs, sync and settlement read back from it.

    job.sh                the rendered batch script
    aifactory.json        metadata: token, id, name, spec, provenance (what `sync` rebuilds from)
    slurm_job_id          the scheduler's job id, written on the site right after sbatch
    exit_code[.N]         the script's own exit code (of array task N): known after the
                          scheduler has forgotten the job
    stdout[.N].log        the job's output (of array task N); stderr[.N].log likewise
    segments.tsv          a checkpointed run's segments (start/end lines: segment, restarts, Slurm
                          id, time, outcome, exit code), written by the batch script
    checkpoint/           $AIF_CHECKPOINT_DIR: the program's state, kept across segments
    aif_port[.N]          "NODE PORT": the job's AIF_PORT and the first node it was picked on (of
                          array task N), written when the batch script starts; `forward` reads it
    elements/N/           array element N's working directory (a sweep): links to the job dir's
                          files, and what the element's run writes
    .aif-upload/ .aif-expect .aif-delete
                          staging leftovers while the site-side upload cache is updated
    runner.json status.json runner.log cancel-requested
                          the local runner's files (the `local` site only)

Next to the job dirs of one spec dir, `.uploads/KEY/` is the site-side upload cache.
Only the standard library is imported here: the local runner imports this module.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

SCRIPT = "job.sh"
META = "aifactory.json"
SLURM_JOB_ID = "slurm_job_id"
EXIT_CODE = "exit_code"
STDOUT = "stdout"
STDERR = "stderr"

UPLOAD_PREFIX = ".aif-upload"
EXPECT_FILE = ".aif-expect"
DELETE_FILE = ".aif-delete"
UPLOAD_CACHE = ".uploads"
DATA_STORE = ".aif-data-store"  # the physical path of the site's data store that `data:` links point into

ELEMENTS = "elements"
SEGMENTS = "segments.tsv"
CHECKPOINT = "checkpoint"
AIF_PORT = "aif_port"

RUNNER = "runner.json"
STATUS = "status.json"
RUNNER_LOG = "runner.log"
CANCEL_FLAG = "cancel-requested"

# In the batch script: the array task's suffix (`.N`, or nothing for a plain job) as the shell sees it
_SHELL_TASK_SUFFIX = "${SLURM_ARRAY_TASK_ID:+.$SLURM_ARRAY_TASK_ID}"
# ... and as sbatch fills it into --output/--error file names
_SLURM_TASK = "%a"


def _suffix(task: int | str | None) -> str:
    return "" if task is None else f".{task}"


def exit_code_name(task: int | str | None = None) -> str:
    """`exit_code`, or `exit_code.N` for array task N."""
    return EXIT_CODE + _suffix(task)


def log_name(stderr: bool = False, task: int | str | None = None) -> str:
    """`stdout.log` / `stderr.log`, or `stdout.N.log` / `stderr.N.log` for array task N."""
    return f"{STDERR if stderr else STDOUT}{_suffix(task)}.log"


def aif_port_name(task: int | str | None = None) -> str:
    """`aif_port`, or `aif_port.N` for array task N."""
    return AIF_PORT + _suffix(task)


def parse_aif_port(text: str) -> tuple[str, int] | None:
    """An `aif_port` file's "NODE PORT" -> (node, port); None for anything else (half written...)."""
    words = text.split()
    if len(words) != 2 or not words[1].isdigit() or not 0 < int(words[1]) < 65536:
        return None
    return words[0], int(words[1])


def element_dir(task: int) -> str:
    """Array element `task`'s working directory, job-dir relative."""
    return f"{ELEMENTS}/{task}"


# Shell case patterns of aifactory's own entries in a job dir: not linked into element dirs.
OWN_PATTERNS = (
    SCRIPT,
    META,
    SLURM_JOB_ID,
    f"{EXIT_CODE}*",
    f"{STDOUT}*.log",
    f"{STDERR}*.log",
    ELEMENTS,
    f"{AIF_PORT}*",
    ".aif-*",
    UPLOAD_CACHE,
    RUNNER,
    STATUS,
    RUNNER_LOG,
    CANCEL_FLAG,
)


def element_codes_command(workdir: str) -> str:
    """Prints `N CODE` for every exit_code.N file of a job dir (a packed sweep's elements)."""
    from aifactory_cli.transport import to_shell

    cd = to_shell(["cd", workdir])
    return (
        f'{cd} && for _f in {EXIT_CODE}.*; do case "$_f" in *.tmp|"{EXIT_CODE}.*") continue ;; esac; '
        f'printf "%s %s\\n" "${{_f#{EXIT_CODE}.}}" "$(cat "$_f")"; done'
    )


def parse_element_codes(text: str) -> dict[int, int]:
    codes: dict[int, int] = {}
    for line in text.splitlines():
        index, _, code = line.strip().partition(" ")
        if index.isdigit() and code.strip().lstrip("-").isdigit():
            codes[int(index)] = int(code.strip())
    return codes


def template_names() -> dict[str, Any]:
    """The job-dir names the batch script uses (the `jobdir` of the template context)."""
    return {
        "stdout_prefix": STDOUT,
        "stderr_prefix": STDERR,
        "exit_code_prefix": EXIT_CODE,
        "elements": ELEMENTS,
        "segments": SEGMENTS,
        "checkpoint": CHECKPOINT,
        "script": SCRIPT,
        "slurm_job_id": SLURM_JOB_ID,
        "cancel_flag": CANCEL_FLAG,
        "own_names": list(OWN_PATTERNS),
        "stdout": log_name(),
        "stderr": log_name(stderr=True),
        "array_stdout": log_name(task=_SLURM_TASK),
        "array_stderr": log_name(stderr=True, task=_SLURM_TASK),
        "exit_code": EXIT_CODE + _SHELL_TASK_SUFFIX,
        "aif_port": AIF_PORT + _SHELL_TASK_SUFFIX,
    }


# --- watching job dirs for their end (`wait`) ---------------------------------------------------------

_WATCH_MARK = "@aifw"
_EXIT_NAME = re.compile(rf"^{EXIT_CODE}(?:\.\d+)?$")


def watch_command(workdirs: list[str]) -> str:
    """One remote command that says, for each of `workdirs` (in order), which exit-code files its
    job dir holds: a line `@aifw I NAME...` each, or `@aifw I -` where the dir cannot be read.
    Builtins only (no process per job), so it stays cheap however many jobs are watched."""
    define = (
        "_aif_w() { "
        'if [ -d "$1" ] && [ -r "$1" ] && [ -x "$1" ]; then '
        f"printf '{_WATCH_MARK} %s' \"$2\"; "
        f'for _f in "$1"/{EXIT_CODE} "$1"/{EXIT_CODE}.*; do '
        "[ -f \"$_f\" ] && printf ' %s' \"${_f##*/}\"; done; printf '\\n'; "
        f"else printf '{_WATCH_MARK} %s -\\n' \"$2\"; fi; }}"
    )
    calls = [f"_aif_w {shlex.quote(d)} {i}" for i, d in enumerate(workdirs)]
    return "; ".join([define, *calls, "true"])


def parse_watch(text: str, count: int) -> list[set[str] | None]:
    """`watch_command`'s stdout for `count` dirs -> per dir the exit-code file names it holds (`.tmp`
    files half written are not counted), or None where the dir could not be read or was not reported."""
    found: list[set[str] | None] = [None] * count
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != _WATCH_MARK or not words[1].isdigit() or int(words[1]) >= count:
            continue
        if words[2:] == ["-"]:
            continue
        found[int(words[1])] = {w for w in words[2:] if _EXIT_NAME.match(w)}
    return found


def has_ended(names: set[str], array_size: int = 0) -> bool:
    """Whether the exit-code files `names` say the job ended: its `exit_code`, or for an array every
    element's `exit_code.N`."""
    if array_size:
        return all(exit_code_name(i) in names for i in range(array_size))
    return exit_code_name() in names


# --- reading job dirs back (`sync`) ------------------------------------------------------------------


def listing_command(glob: str) -> str:
    """One remote command that prints, for every job dir matching `glob` (a shell glob) that has
    metadata, its absolute path, metadata, Slurm id, exit code and script."""
    from aifactory_cli.transport import batch

    each = batch.command(
        {
            "dir": '(cd "$_d" && pwd -P)',
            "meta": f'cat "$_d/{META}"',
            "id": f'cat "$_d/{SLURM_JOB_ID}" 2>/dev/null',
            "rc": f'cat "$_d/{exit_code_name()}" 2>/dev/null',
            "script": f'cat "$_d/{SCRIPT}" 2>/dev/null',
        }
    )
    return f'for _d in {glob}; do [ -f "$_d/{META}" ] || continue; {each}; done'


def parse_listing(text: str) -> list[dict[str, Any]]:
    """`listing_command`'s stdout -> one record per job dir: workdir, meta (the parsed metadata),
    slurm_job_id, exit_code, script. Dirs whose metadata is not aifactory's are left out."""
    from aifactory_cli.transport import batch

    records: list[dict[str, Any]] = []
    for found in batch.records(text, first="dir"):
        if "meta" not in found:
            continue
        try:
            meta = json.loads(found["meta"].output)
        except ValueError:
            continue
        if not isinstance(meta, dict) or "token" not in meta:
            continue
        none = batch.Section("", "", 1)
        job_id = found.get("id", none).output.strip()
        rc = found.get("rc", none).output.strip()
        records.append(
            {
                "workdir": found["dir"].output.strip(),
                "meta": meta,
                "slurm_job_id": job_id or None,
                "exit_code": int(rc) if rc.lstrip("-").isdigit() else None,
                "script": found.get("script", none).output,
            }
        )
    return records
