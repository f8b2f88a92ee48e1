"""The `aifactory ...` commands printed in README.md and docs/*.md, and how the docs test runs each.

A command is a line of a fenced shell block (no language, sh, bash, shell, console) that starts with
`aifactory `, or a backticked `aifactory ...` example in a table row (usage patterns with SPEC, JOB,
[...] are not examples). A trailing `# exits N` comment is the documented exit code (`# exits N on a
machine without GPUs`: 0 where this machine has GPUs); any other comment is just a comment.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

SHELL_INFOS = {"", "sh", "bash", "shell", "console"}
EXITS_RE = re.compile(r"#\s*exits (\d+)( on a machine without GPUs)?")
# `aifactory submit SPEC [--site S]`: a usage pattern, not an example
USAGE_RE = re.compile(r"\[|\.\.\.|\b(?:SPEC|JOB|FILE|DIR|GLOB|PATH|SECONDS|NAME)\b")

# What the docs test does not run exactly as printed, and why (keep this short).
PREFIXES_NOT_RUN = {
    # the install step: the test runs the checkout's code (PYTHONPATH), not a pip-installed copy
    "pip install . && ": "the test runs this checkout's code; installing is tests/unit/test_packaging.py's job",
}
# A job sent to a remote site with --wait would run the GPU training on the test bed (minutes):
# these submits run with --dry-run instead (resolve, render and check everything, submit nothing).
DRY_RUN_INSTEAD = ("--wait", "--follow")


@dataclass
class DocCommand:
    file: str  # relative to the repository
    line: int
    text: str  # the command as printed, without its comment
    expect: int  # the documented exit code
    gpu_qualified: bool = False  # `# exits N on a machine without GPUs`

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _command(raw: str, file: str, line: int) -> DocCommand | None:
    text, _, comment = raw.partition(" #")
    text = text.strip()
    for prefix in PREFIXES_NOT_RUN:
        text = text.removeprefix(prefix)
    if not text.startswith("aifactory "):
        return None
    m = EXITS_RE.search("#" + comment) if comment else None
    return DocCommand(file, line, text, int(m.group(1)) if m else 0, bool(m and m.group(2)))


def extract(path: Path) -> list[DocCommand]:
    """Every documented command of one Markdown file, in order."""
    rel = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
    found: list[DocCommand] = []
    fence: str | None = None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else stripped[3:].strip().lower()
            continue
        if fence is not None:
            if fence in SHELL_INFOS:
                cmd = _command(stripped, rel, n)
                if cmd:
                    found.append(cmd)
        elif stripped.startswith("|"):
            for span in re.findall(r"`(aifactory [^`]+)`", stripped):
                if not USAGE_RE.search(span.removeprefix("aifactory ")):
                    cmd = _command(span, rel, n)
                    if cmd:
                        found.append(cmd)
    return found


def all_commands() -> list[DocCommand]:
    return [c for f in DOC_FILES for c in extract(f)]


def config_block(path: Path = REPO / "README.md") -> str | None:
    """The user config the README shows (the YAML block headed `# ~/.config/aifactory/config.yaml`)."""
    m = re.search(r"```\n(# ~/\.config/aifactory/config\.yaml\n.*?)```", path.read_text(), re.S)
    return m.group(1) if m else None


def remote_site(text: str) -> str | None:
    """The site a submit goes to when it is not the local one (`--site lumi`, `--site auto`)."""
    m = re.search(r"(?:--site|-s)[ =](\S+)", text)
    return m.group(1) if m and m.group(1) != "local" else None


def as_run(cmd: DocCommand) -> str:
    """The command line the test runs: as printed, except remote submits that wait (--dry-run instead)."""
    words = cmd.text.split(" ")
    if words[1] == "submit" and remote_site(cmd.text) and any(w in words for w in DRY_RUN_INSTEAD):
        return " ".join([w for w in words if w not in DRY_RUN_INSTEAD] + ["--dry-run"])
    return cmd.text


def machine_has_gpus() -> bool:
    for tool, args in (("nvidia-smi", ["-L"]), ("rocm-smi", ["--showproductname"])):
        if shutil.which(tool):
            proc = subprocess.run([tool, *args], capture_output=True, text=True, timeout=30)
            if proc.returncode == 0 and ("GPU" in proc.stdout):
                return True
    return False
