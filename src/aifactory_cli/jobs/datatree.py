"""Dataset trees in the site's data store: a `data:` directory becomes one tree of hard links to the
store's files, shared by every job that has the same directory, and the job dir gets one symlink to it.

    DATA/trees/T/REST...     hard links to DATA/sha256/ab/HASH (no inode, no byte more), dirs mode 0500
    JOBDIR/TOP -> DATA/trees/T

T is the sha256 of the directory's listing (`HASH REST` lines, sorted), so an unchanged dataset is
found by the probe and costs its job one symlink; 100,000 files no longer mean 100,000 links in
every job dir (nor as many inodes against the project's file quota). The links are built on the
site by GNU tar from hard-link members (no fork per file), in the tar stream that carries the new
small files, and the tree enters `trees/` by one rename once every file in it has been checked.

Here: grouping the files into trees and the tar members; the command text is `jobs.datastore`'s."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

TREES = "trees"


@dataclass(frozen=True)
class Tree:
    top: str  # the job-dir name linked to it
    digest: str  # T: sha256 of its listing
    files: tuple[tuple[str, str], ...]  # (path inside the tree, sha256), sorted

    @property
    def stored(self) -> str:
        return f"{TREES}/{self.digest}"


def tree_digest(files: Iterable[tuple[str, str]]) -> str:
    listing = "".join(f"{digest} {rest}\n" for rest, digest in sorted(files))
    return hashlib.sha256(listing.encode()).hexdigest()


def group(rels: Iterable[tuple[str, str]], taken: set[str]) -> tuple[list[Tree], list[str]]:
    """The trees for `(rel, sha256)` pairs (job-dir relative): one per top-level directory that
    nothing else in the job dir (`taken`: top-level names of uploads and generated files) uses;
    returns the trees and the rels that stay single links (top-level files, shared tops)."""
    by_top: dict[str, dict[str, str]] = {}
    single: list[str] = []
    for rel, digest in rels:
        top, sep, rest = rel.partition("/")
        if not sep or top in taken:
            single.append(rel)
        else:
            by_top.setdefault(top, {})[rest] = digest
    trees = [Tree(top, tree_digest(f.items()), tuple(sorted(f.items()))) for top, f in sorted(by_top.items())]
    return trees, single


def probe_lines(trees: Iterable[Tree], digests: Iterable[str], small: Iterable[str] = ()) -> list[str]:
    """The probe's input (`jobs.datastore.probe_command`): each tree with its files' digests (skipped
    on the site when the tree is stored), then `digests` (those of files linked one by one); a digest
    in `small` (a file sent in the tar, never in part) as `s:DIGEST`: no partial copy is looked for."""
    whole = set(small)

    def line(d: str) -> str:
        return f"s:{d}" if d in whole else d

    lines: list[str] = []
    for tree in trees:
        lines += [f"tree:{tree.digest}", *(line(d) for d in sorted({d for _, d in tree.files})), "end"]
    return lines + [line(d) for d in sorted(set(digests))]


def needed(trees: Iterable[Tree], single: Iterable[str], stored_trees: set[str]) -> set[str]:
    """The digests that must be in the store: the single links' and those of trees not stored yet."""
    out = set(single)
    for tree in trees:
        if tree.digest not in stored_trees:
            out.update(d for _, d in tree.files)
    return out


def tree_links(attempt: str, trees: Iterable[Tree], new: set[str]) -> Iterator[tuple[str, str, int]]:
    """Hard-link members (`transport.tarstream.LocalTar.link_record`), store-relative (tar runs in
    DATA): `attempt/trees/T/REST` linking to the file's copy in this stream (`attempt/ab/HASH`, when
    in `new`) or in the store (`sha256/ab/HASH`), with their mtime."""
    now = int(time.time())
    for tree in trees:
        base = f"{attempt}/{tree.stored}/"
        for rest, digest in tree.files:
            place = f"{digest[:2]}/{digest}"
            yield base + rest, f"{attempt}/{place}" if digest in new else f"sha256/{place}", now
