"""`collect_uploads` (the spec's `upload:` and `data:` entries): one scandir per directory, in os.walk's
order, with its rules: subdirs by name after each dir's files, links to dirs not followed, links to files
followed, __pycache__ and .git skipped, a name listed twice taken once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aifactory_cli.errors import SpecError
from aifactory_cli.jobs.staging import collect_files, collect_uploads


def _walked(base: Path, entries: list[str]) -> list[tuple[Path, str]]:
    """The os.walk implementation these replaced, as the reference."""
    out: list[tuple[Path, str]] = []
    seen: set[str] = set()
    for entry in entries:
        matches = sorted(base.glob(entry)) if any(c in entry for c in "*?[") else [base / entry]
        for path in matches:
            found = []
            if path.is_dir():
                for root, dirs, files in os.walk(path):
                    dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", ".git"))
                    found += [Path(root) / n for n in sorted(files)]
            else:
                found = [path]
            for full in found:
                rel = full.relative_to(base).as_posix()
                if rel not in seen:
                    seen.add(rel)
                    out.append((full, rel))
    return out


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    base = tmp_path / "spec"
    for rel in (
        "ds/b.txt",
        "ds/a.txt",
        "ds/z/deep/x.bin",
        "ds/m/1",
        "ds/__pycache__/c.pyc",
        "ds/.git/HEAD",
        "ds/.hidden",
        "other/o.txt",
        "top.py",
        "ds/a b/c d.txt",
    ):
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(rel)
    (base / "ds" / "link-to-dir").symlink_to(base / "other")  # not followed, as os.walk
    (base / "ds" / "link-to-file").symlink_to(base / "top.py")  # followed: a file
    return base


@pytest.mark.parametrize(
    "entries", [["ds"], ["ds", "ds/a.txt", "top.py"], ["*"], ["ds/*"], ["."], ["ds/z", "other"], ["ds/m/../a.txt"]]
)
def test_the_same_files_in_the_same_order_as_os_walk(tree: Path, entries: list[str]) -> None:
    assert collect_uploads(entries, tree) == _walked(tree, entries)


def test_a_fifo_or_an_unreadable_dir_is_a_clear_error(tree: Path) -> None:
    os.mkfifo(tree / "ds" / "pipe")
    with pytest.raises(SpecError, match="not a regular file"):
        collect_uploads(["ds"], tree, what="data")
    os.unlink(tree / "ds" / "pipe")
    if os.geteuid() == 0:
        return  # root reads every dir
    (tree / "ds" / "m").chmod(0)
    try:
        with pytest.raises(SpecError, match="cannot read the directory"):
            collect_uploads(["ds"], tree, what="data")
    finally:
        (tree / "ds" / "m").chmod(0o755)


def test_collect_files_gives_the_stat_of_each_file_found_in_a_directory(tree: Path) -> None:
    """The data listing's stats (the hash cache's stamps come from them, not a second stat per file):
    those of the file a link names, None for a file named by itself; a broken link is refused."""
    listed = collect_files(["ds", "top.py"], tree, what="data")
    assert [(Path(p), rel) for p, rel, _ in listed] == _walked(tree, ["ds", "top.py"])
    for path, rel, st in listed:
        if rel == "top.py":
            assert st is None
        else:
            want = os.stat(path)  # through the link for ds/link-to-file
            assert (st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns) == (
                want.st_size,
                want.st_ino,
                want.st_mtime_ns,
                want.st_ctime_ns,
            )
    (tree / "ds" / "broken").symlink_to(tree / "nowhere")
    with pytest.raises(SpecError, match="not a regular file"):
        collect_files(["ds"], tree, what="data")
