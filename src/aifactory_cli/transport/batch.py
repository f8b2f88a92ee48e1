"""Several commands in one round trip, and their output split back per command.

Each round trip to a login node costs its latency, and sites such as JSC limit how often one may
connect, so a use case that needs several answers (squeue and sacct; the checks of `sites check`;
every job dir of a site) asks once. `command()` frames each command's stdout between marker lines
and records its exit status; `split()` cuts the output back into named sections:

    <newline>@@AIF@@ NAME<newline>  ...the command's stdout...  <newline>@@AIF@@ rc N<newline>

The round trip's own exit status only says that the shell ran to the end; each section carries
its command's. A command's stderr goes to the round trip's stderr unless the command redirects it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

MARK = "@@AIF@@"
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_SECTION = re.compile(rf"(?:^|\n){MARK} ({_NAME.pattern})\n(.*?)\n{MARK} rc (\d+)(?=\n|$)", re.S)


@dataclass(frozen=True)
class Section:
    name: str
    output: str
    rc: int

    @property
    def ok(self) -> bool:
        return self.rc == 0


def command(commands: Mapping[str, str]) -> str:
    """One shell line that runs `commands` ({name: shell command}) in order, each framed by markers.
    Names are plain tokens (letters, digits, `_ . -`); a command may hold `;`, pipes and redirections."""
    parts = []
    for name, cmd in commands.items():
        if not _NAME.fullmatch(name):
            raise ValueError(f"batch section name {name!r} is not a plain token")
        body = cmd.strip().rstrip(";")
        parts.append(f"printf '\\n%s %s\\n' {MARK} {name}; {{ {body}; }}; printf '\\n%s rc %s\\n' {MARK} \"$?\"")
    return "; ".join(parts) or "true"


def split(text: str) -> list[Section]:
    """The sections of `command()`'s stdout, in order (output before the first marker, such as a
    login banner, is dropped; a section cut off before its end marker is missing)."""
    return [Section(m.group(1), m.group(2), int(m.group(3))) for m in _SECTION.finditer(text)]


def sections(text: str) -> dict[str, Section]:
    """The sections of `command()`'s stdout by name."""
    return {s.name: s for s in split(text)}


def records(text: str, first: str) -> list[dict[str, Section]]:
    """For a batch run once per item (a shell loop around `command()`): one dict per item, each
    starting at a section named `first`."""
    out: list[dict[str, Section]] = []
    for s in split(text):
        if s.name == first:
            out.append({})
        if out:
            out[-1][s.name] = s
    return out
