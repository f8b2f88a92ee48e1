"""Dataset trees (`jobs.datatree`): a `data:` directory stored as one tree of hard links to the store's
files, made by the site's commands in a real bash here (LocalTransport), as on a login node."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from aifactory_cli.backends.datastore import DataMismatch, DataStore
from aifactory_cli.jobs import datastore as ds
from aifactory_cli.jobs.datatree import group, needed, probe_lines, tree_digest
from aifactory_cli.transport.local import LocalTransport


def _files(tmp_path: Path, named: dict[str, bytes]) -> list[ds.DataFile]:
    pairs = []
    for name, data in named.items():
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        pairs.append((path, name, None))
    return ds.hash_files(pairs, ds.HashCache(tmp_path / "hashes.json"))


def _send(s: DataStore, d: str, files: list[ds.DataFile], token: str, taken: set[str] | None = None):
    """As `service.data.stage` does it."""
    trees, single = group([(f.rel, f.sha256) for f in files], taken or set())
    by_rel = {f.rel: f.sha256 for f in files}
    small = [f.sha256 for f in files if f.size < ds.LARGE]
    probe = s.probe(d, probe_lines(trees, (by_rel[r] for r in single), small))
    need = needed(trees, (by_rel[r] for r in single), probe.trees)
    return trees, single, probe, s.send(d, files, probe, token, None, trees, need)


def test_grouping_by_top_level_dir_and_what_stays_a_single_link() -> None:
    pairs = [("ds/a", "1" * 64), ("ds/sub/b", "2" * 64), ("top.bin", "3" * 64), ("code/x", "4" * 64)]
    trees, single = group(pairs, taken={"code"})
    assert [(t.top, t.files) for t in trees] == [("ds", (("a", "1" * 64), ("sub/b", "2" * 64)))]
    assert sorted(single) == ["code/x", "top.bin"]  # a top-level file; a dir an upload: shares
    # the same listing under another name is the same tree; one changed file is another tree
    assert tree_digest([("a", "1" * 64)]) == group([("other/a", "1" * 64)], set())[0][0].digest
    assert tree_digest([("a", "1" * 64)]) != tree_digest([("a", "5" * 64)])
    assert tree_digest([("a", "1" * 64)]) != tree_digest([("b", "1" * 64)])


def test_a_data_dir_becomes_one_read_only_tree_of_hard_links_found_again_by_the_probe(tmp_path: Path) -> None:
    s, d = DataStore(LocalTransport(), "local"), str(tmp_path / "site" / "data")
    files = _files(tmp_path, {"ds/a.txt": b"alpha", "ds/sub/b.txt": b"beta" * 10, "ds/dup.txt": b"alpha"})
    (tree,), single, probe, sent = _send(s, d, files, "tok1")
    assert single == [] and probe.trees == set()
    assert (sent.files_sent, sent.trees_made) == (2, 1)
    root = Path(d) / "trees" / tree.digest
    for f in files:
        linked = root / f.rel.split("/", 1)[1]
        assert linked.read_bytes() == (tmp_path / "src" / f.rel).read_bytes()
        assert linked.stat().st_ino == (Path(d) / f.stored).stat().st_ino  # a hard link: no inode more
        assert stat.S_IMODE(linked.stat().st_mode) == 0o400
    for sub in (root, root / "sub"):
        assert stat.S_IMODE(sub.stat().st_mode) == 0o500  # a job cannot add, remove or rename in it
    assert list((Path(d) / "tmp").iterdir()) == []
    # an unchanged dir: the probe finds the tree, nothing is sent or made
    (_, _, again, second) = _send(s, d, files, "tok2")
    assert again.trees == {tree.digest} and again.have == set()  # its files are not even looked up
    assert (second.files_sent, second.bytes_sent, second.trees_made, second.stored_already) == (0, 0, 0, 2)
    # a file both in a stored tree and linked on its own is looked up (once), and found
    mixed = _files(
        tmp_path, {"ds/a.txt": b"alpha", "ds/sub/b.txt": b"beta" * 10, "ds/dup.txt": b"alpha", "a1": b"alpha"}
    )
    (_, single, probe3, third) = _send(s, d, mixed, "tok2b")
    assert single == ["a1"] and probe3.have == {files[0].sha256} and third.files_sent == 0
    # one file more: a new tree, only the new file sent; the others are linked from the store
    more = _files(tmp_path, {"ds/a.txt": b"alpha", "ds/sub/b.txt": b"beta" * 10, "ds/new.txt": b"new"})
    (tree2,), _, _, fourth = _send(s, d, more, "tok3")
    assert (fourth.files_sent, fourth.trees_made) == (1, 1) and tree2.digest != tree.digest
    assert (Path(d) / "trees" / tree2.digest / "new.txt").read_bytes() == b"new"
    assert (Path(d) / "trees" / tree2.digest / "a.txt").stat().st_ino == (Path(d) / files[0].stored).stat().st_ino


def test_a_large_file_in_a_tree_is_sent_first_and_linked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ds, "LARGE", 64)
    s, d = DataStore(LocalTransport(), "local"), str(tmp_path / "site" / "data")
    files = _files(tmp_path, {"ds/big.bin": os.urandom(200), "ds/small.txt": b"s"})
    (tree,), _, _, sent = _send(s, d, files, "tok")
    assert sent.files_sent == 2 and sent.trees_made == 1
    big = Path(d) / "trees" / tree.digest / "big.bin"
    assert big.read_bytes() == (tmp_path / "src" / "ds" / "big.bin").read_bytes()


def test_no_tree_is_made_when_a_file_does_not_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, d = DataStore(LocalTransport(), "local"), str(tmp_path / "site" / "data")
    files = _files(tmp_path, {"ds/a.txt": b"alpha", "ds/b.txt": b"beta"})
    (tmp_path / "src" / "ds" / "b.txt").write_bytes(b"BETA")  # changed after hashing: sent bytes differ
    with pytest.raises(DataMismatch, match=r"ds/b\.txt"):
        _send(s, d, files, "tok")
    assert list((Path(d) / "trees").iterdir()) == [] and list((Path(d) / "tmp").iterdir()) == []
    assert (Path(d) / files[0].stored).is_file()  # the good file is stored


def test_gc_listing_maps_trees_to_their_files_and_removal_keeps_shared_files_intact(tmp_path: Path) -> None:
    s, d = DataStore(LocalTransport(), "local"), str(tmp_path / "site" / "data")
    files = _files(tmp_path, {"ds/a.txt": b"alpha", "ds/b b.txt": b"beta"})
    (tree,), _, _, _ = _send(s, d, files, "tok")
    listing = s.listing(d)
    assert set(listing.trees) == {tree.digest} and listing.recent_trees == {tree.digest}
    by_inode = {i: h for h, i in listing.inodes.items()}
    assert {by_inode[i] for i in listing.trees[tree.digest]} == {f.sha256 for f in files}
    # a job dir's link to the tree is found, as `tree:T`
    job = tmp_path / "jobs" / "train-1"
    job.mkdir(parents=True)
    (job / "ds").symlink_to(Path(listing.absolute or "") / "trees" / tree.digest)
    links = s.site_links([listing.absolute or ""], [str(tmp_path / "jobs")], 1)
    assert links.users == {(listing.absolute, f"tree:{tree.digest}"): {os.path.realpath(job)}}
    # removal: recent trees stay; old ones go, and their dirs' modes do not touch the stored files
    s.remove(d, [], [], trees=[tree.digest])
    assert (Path(d) / "trees" / tree.digest).is_dir()
    s.remove(d, [], [], busy_minutes=0, trees=[tree.digest])
    assert not (Path(d) / "trees" / tree.digest).exists()
    for f in files:
        assert stat.S_IMODE((Path(d) / f.stored).stat().st_mode) == 0o400
    assert s.listing(d).trees == {}
