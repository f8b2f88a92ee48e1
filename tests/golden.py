"""Golden files: compare rendered texts with their reviewed copies, or (AIF_UPDATE_GOLDEN=1)
rewrite the copies. An update run is never a pass: a test that rewrote a file fails, so the diff
gets reviewed and the suite run again, and one whose files were already right is skipped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def check_golden(files: dict[Path, str], what: str) -> None:
    """`files`: golden path -> the text just rendered for it; `what` names it in a failure."""
    if os.environ.get("AIF_UPDATE_GOLDEN"):
        stale = [path for path, text in files.items() if not path.is_file() or path.read_text() != text]
        if not stale:
            pytest.skip(f"AIF_UPDATE_GOLDEN: {what} unchanged (run without it to check)")
        for path in stale:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[path])
        pytest.fail(
            f"AIF_UPDATE_GOLDEN: rewrote {', '.join(map(str, stale))}; review the diff, then run the tests "
            "without AIF_UPDATE_GOLDEN",
            pytrace=False,
        )
    for path, text in files.items():
        assert path.is_file(), f"no golden file {path} for {what}: create it with AIF_UPDATE_GOLDEN=1, review it"
        assert text == path.read_text(), f"{what} differs from {path}; review, then AIF_UPDATE_GOLDEN=1"
