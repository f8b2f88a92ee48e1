"""The site's content-addressed data store (a spec's `data:`): its site-side commands run in a real
bash here (LocalTransport), on a store in tmp_path, as they run on a login node."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from aifactory_cli.backends.datastore import DataMismatch, DataStore
from aifactory_cli.errors import EXIT_REMOTE, RemoteError
from aifactory_cli.jobs import datastore as ds
from aifactory_cli.transport import CommandResult, Stdin
from aifactory_cli.transport.local import LocalTransport


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _data(tmp_path: Path, named: dict[str, bytes]) -> list[ds.DataFile]:
    cache = ds.HashCache(tmp_path / "hashes.json")
    return ds.hash_files([(_file(tmp_path, n, b), n, None) for n, b in named.items()], cache)


@pytest.fixture
def store(tmp_path: Path) -> tuple[DataStore, str]:
    return DataStore(LocalTransport(), "local"), str(tmp_path / "site" / "data")


def _stored(data_dir: str, f: ds.DataFile) -> Path:
    return Path(data_dir) / f.stored


def test_small_files_are_stored_once_private_and_read_only(store, tmp_path: Path) -> None:
    s, d = store
    files = _data(tmp_path, {"a.txt": b"alpha", "b/c.txt": b"gamma" * 100, "dup.txt": b"alpha"})
    probe = s.probe(d, [f.sha256 for f in files])
    assert probe.absolute == os.path.realpath(d) and probe.have == set()
    sent = s.send(d, files, probe, "tok1")
    assert sent.files_sent == 2  # a.txt and dup.txt are one content
    assert sent.bytes_sent == 5 + 500
    for f in files:
        path = _stored(d, f)
        assert path.read_bytes() == (tmp_path / "src" / f.rel).read_bytes()
        assert stat.S_IMODE(path.stat().st_mode) == 0o400
    for sub in (Path(d), Path(d) / "sha256", Path(d) / "tmp"):
        assert stat.S_IMODE(sub.stat().st_mode) == 0o700
    assert list((Path(d) / "tmp").iterdir()) == []  # the attempt dir is gone
    again = s.probe(d, [f.sha256 for f in files])
    assert again.have == {f.sha256 for f in files}
    second = s.send(d, files, again, "tok2")
    assert (second.files_sent, second.bytes_sent, second.stored_already) == (0, 0, 2)


def _same_prefix() -> tuple[bytes, bytes]:
    """Two contents whose digests share their first two hex digits (one sha256/ prefix dir)."""
    seen: dict[str, bytes] = {}
    for i in range(10_000):
        data = b"content %d" % i
        prefix = hashlib.sha256(data).hexdigest()[:2]
        if prefix in seen:
            return seen[prefix], data
        seen[prefix] = data
    raise AssertionError("no two digests with one prefix")


def test_new_files_join_prefix_dirs_the_store_has_and_a_racing_copy_is_kept(store, tmp_path: Path) -> None:
    s, d = store
    first, second = _same_prefix()
    a, b = _data(tmp_path, {"a": first, "b": second})
    stale = s.probe(d, [a.sha256, b.sha256])  # what a racing submission saw: neither stored
    s.send(d, [a], stale, "tok1")  # a new prefix dir: moved in whole
    inode = _stored(d, a).stat().st_ino
    sent = s.send(d, [a, b], stale, "tok2")  # a stored meanwhile; b into a prefix dir that exists
    assert sent.files_sent == 2
    assert _stored(d, b).read_bytes() == second
    assert stat.S_IMODE(_stored(d, b).stat().st_mode) == 0o400
    assert _stored(d, a).stat().st_ino == inode  # the copy a job may already link is left as it is
    assert list((Path(d) / "tmp").iterdir()) == []
    assert s.probe(d, [a.sha256, b.sha256]).have == {a.sha256, b.sha256}


def test_a_large_file_resumes_at_its_partial_copy(store, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ds, "LARGE", 1000)
    s, d = store
    body = os.urandom(300_000)
    (f,) = _data(tmp_path, {"big.bin": body})
    s.probe(d, [f.sha256])
    (Path(d) / "tmp" / f"{f.sha256}.part").write_bytes(body[:123_456])  # a cut earlier attempt
    probe = s.probe(d, [f.sha256])
    assert probe.partial == {f.sha256: 123_456} and not probe.have
    sent = s.send(d, [f], probe, "tok")
    assert sent.resumed == {f.sha256: 123_456}
    assert sent.bytes_sent == 300_000 - 123_456
    assert hashlib.sha256(_stored(d, f).read_bytes()).hexdigest() == f.sha256
    assert not (Path(d) / "tmp" / f"{f.sha256}.part").exists()


@pytest.mark.parametrize(("offset", "cores"), [(0, 0), (123_456, 0), (0, None)])
def test_the_site_hashes_a_large_file_while_it_arrives_not_by_reading_it_again(
    tmp_path: Path, offset: int, cores: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a login node with more than FOLLOW_CORES cores, the follower (`tail -f` behind dd) gives the
    digest: with the read-back made to fail, a whole file (a fresh one, or the rest of a cut one) is
    still stored; a wrong one is read back, then refused. With no core to spare (`cores` None: more
    than any machine has), the file is read once after it was written, and nothing is stored without
    that read."""
    import subprocess

    monkeypatch.setattr(ds, "FOLLOW_CORES", 100_000 if cores is None else cores)
    body = os.urandom(3_000_000)
    digest = hashlib.sha256(body).hexdigest()
    d = tmp_path / "store"
    (d / "tmp").mkdir(parents=True)
    (d / "sha256").mkdir()
    if offset:
        (d / "tmp" / f"{digest}.part").write_bytes(body[:offset])  # a cut earlier attempt
    line = ds.large_store_command(str(d), digest, offset, len(body))
    reread = f"s=$($aif_sha256 < tmp/{digest}.part)"
    assert reread in line
    no_reread = line.replace(reread, "s=$(false)")
    done = subprocess.run(["bash", "-c", no_reread], input=body[offset:], capture_output=True, timeout=60)
    if cores is None:  # no follower: the read-back is the only check, and it failed
        assert done.returncode != 0 and not (d / ds.stored_name(digest)).exists(), done
        done = subprocess.run(["bash", "-c", line], input=body[offset:], capture_output=True, timeout=60)
    assert done.returncode == 0, done
    assert (d / ds.stored_name(digest)).read_bytes() == body
    (d / "tmp" / f"{digest}.part").write_bytes(body[:offset])
    (d / ds.stored_name(digest)).unlink()
    bad = subprocess.run(["bash", "-c", line], input=os.urandom(len(body) - offset), capture_output=True)
    assert bad.returncode == ds.MISMATCH_RC and bad.stdout.decode().strip() == f"BAD {digest}"
    assert not (d / ds.stored_name(digest)).exists() and not (d / "tmp" / f"{digest}.part").exists()


def _cut_after(n: int, write: Callable[[BinaryIO], None]) -> Callable[[BinaryIO], None]:
    class Short:
        def __init__(self, sink: BinaryIO) -> None:
            self.sink, self.left = sink, n

        def write(self, b: bytes) -> int:
            part = b[: self.left]
            self.left -= len(part)
            self.sink.write(part)
            return len(b)

    def cut(sink: BinaryIO) -> None:
        write(Short(sink))  # type: ignore[arg-type]

    return cut


class _Cutting(LocalTransport):
    """A stream that ends early, as when the connection is cut mid-file (the site sees EOF)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def run(self, command, *, stdin: Stdin = None, timeout: float | None = None) -> CommandResult:
        if callable(stdin):
            stdin = _cut_after(self.after, stdin)
        return super().run(command, stdin=stdin, timeout=timeout)


def test_a_cut_large_file_is_exit_3_keeps_its_part_and_the_next_attempt_sends_only_the_rest(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(ds, "LARGE", 1000)
    d = str(tmp_path / "site" / "data")
    body = os.urandom(200_000)
    (f,) = _data(tmp_path, {"big.bin": body})
    cutting = DataStore(_Cutting(70_000), "bed")
    with pytest.raises(RemoteError) as err:
        cutting.send(d, [f], cutting.probe(d, [f.sha256]), "t1")
    assert err.value.exit_code == EXIT_REMOTE
    assert "0 of 1 file(s) stored" in err.value.message
    assert not _stored(d, f).exists()
    # only the part stays (not the fifo and sum file of the hash taken as the stream arrived)
    assert [p.name for p in (Path(d) / "tmp").iterdir()] == [f"{f.sha256}.part"]
    whole = DataStore(LocalTransport(), "bed")
    probe = whole.probe(d, [f.sha256])
    assert probe.partial == {f.sha256: 70_000}
    sent = whole.send(d, [f], probe, "t2")
    assert sent.bytes_sent == 130_000
    assert _stored(d, f).read_bytes() == body
    assert list((Path(d) / "tmp").iterdir()) == []


def test_a_cut_tar_of_small_files_stores_what_arrived_whole(tmp_path: Path) -> None:
    d = str(tmp_path / "site" / "data")
    files = _data(tmp_path, {f"f{i}.bin": os.urandom(4000) for i in range(10)})
    cutting = DataStore(_Cutting(5 * 5120 + 2000), "bed")  # 5 members whole (512 header + 4608), then a cut
    with pytest.raises(RemoteError):
        cutting.send(d, files, cutting.probe(d, [f.sha256 for f in files]), "t1")
    stored = [f for f in files if _stored(d, f).exists()]
    assert len(stored) in (4, 5)  # every stored one is whole and checked
    for f in stored:
        assert hashlib.sha256(_stored(d, f).read_bytes()).hexdigest() == f.sha256
    whole = DataStore(LocalTransport(), "bed")
    sent = whole.send(d, files, whole.probe(d, [f.sha256 for f in files]), "t2")
    assert sent.files_sent == 10 - len(stored)
    assert all(_stored(d, f).exists() for f in files)


def test_content_that_does_not_match_its_digest_is_refused_naming_the_file(store, tmp_path: Path, monkeypatch) -> None:
    s, d = store
    (f,) = _data(tmp_path, {"x.txt": b"original"})
    (tmp_path / "src" / "x.txt").write_bytes(b"changed!")  # after hashing: what is sent is not what was hashed
    with pytest.raises(DataMismatch) as err:
        s.send(d, [f], s.probe(d, [f.sha256]), "t")
    assert "x.txt" in err.value.message and err.value.exit_code == EXIT_REMOTE
    assert not _stored(d, f).exists()
    monkeypatch.setattr(ds, "LARGE", 4)
    with pytest.raises(DataMismatch, match=r"x\.txt"):
        s.send(d, [f], s.probe(d, [f.sha256]), "t")
    assert not _stored(d, f).exists() and not (Path(d) / "tmp" / f"{f.sha256}.part").exists()


def test_a_store_dir_that_is_not_the_users_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root may chmod anything")
    d = tmp_path / "site" / "data"
    (d / "sha256").mkdir(parents=True)
    (d / "tmp").mkdir()
    d.chmod(0o500)  # a dir this user may not change: as one of another member
    try:
        with pytest.raises(RemoteError, match="cannot use the data store"):
            DataStore(LocalTransport(), "bed").send(
                str(d), [], DataStore(LocalTransport(), "bed").probe(str(d), []), "t"
            )
    finally:
        d.chmod(0o700)


def test_listing_and_removal(store, tmp_path: Path) -> None:
    s, d = store
    files = _data(tmp_path, {"a": b"1", "b": b"22"})
    s.send(d, files, s.probe(d, [f.sha256 for f in files]), "t")
    (Path(d) / "tmp" / "deadbeef.part").write_bytes(b"xyz")
    listing = s.listing(d)
    assert listing.absolute == os.path.realpath(d)
    assert listing.files == {f.sha256: f.size for f in files}
    # just written: maybe an upload in progress; listed as busy, and removal leaves it
    assert listing.leftovers == {} and listing.busy == {"deadbeef.part": 3}
    s.remove(d, [], ["deadbeef.part"])
    assert (Path(d) / "tmp" / "deadbeef.part").exists()
    old = s.listing(d, busy_minutes=0)  # as if unchanged for longer than the limit
    assert old.leftovers == {"deadbeef.part": 3} and old.busy == {}
    s.remove(d, [files[0].sha256], ["deadbeef.part"], busy_minutes=0)
    after = s.listing(d)
    assert after.files == {files[1].sha256: 2} and after.leftovers == {} and after.busy == {}
    assert s.listing(str(tmp_path / "none")).absolute is None


def test_hash_cache_reads_an_unchanged_file_once(tmp_path: Path) -> None:
    path = _file(tmp_path, "d.bin", b"x" * 5000)
    cache = ds.HashCache(tmp_path / "h.json")
    read: list[int] = []
    assert cache.digest(path, read.append)[1] == hashlib.sha256(b"x" * 5000).hexdigest()
    cache.save()
    again = ds.HashCache(tmp_path / "h.json")
    assert again.digest(path, read.append) == (5000, hashlib.sha256(b"x" * 5000).hexdigest())
    assert sum(read) == 5000  # the second time from the cache
    path.write_bytes(b"y" * 5000)
    os.utime(path, ns=(1, 1))
    assert again.digest(path, read.append)[1] == hashlib.sha256(b"y" * 5000).hexdigest()


def test_hash_cache_reads_again_a_file_rewritten_with_its_old_mtime_put_back(tmp_path: Path) -> None:
    """`touch -r` after an in-place write, `rsync --inplace -t`: the same size, mtime and inode, new
    bytes; the ctime moved."""
    path = _file(tmp_path, "d.bin", b"x" * 5000)
    cache = ds.HashCache(tmp_path / "h.json")
    assert cache.digest(path)[1] == hashlib.sha256(b"x" * 5000).hexdigest()
    st = path.stat()
    time.sleep(0.01)  # past the coarse clock's tick, as any real rewrite after a hash is
    with open(path, "r+b") as fh:
        fh.write(b"y" * 5000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == (st.st_mtime_ns, st.st_ino)
    assert cache.digest(path)[1] == hashlib.sha256(b"y" * 5000).hexdigest()


def test_hash_cache_forgets_what_it_is_told_and_reads_it_again(tmp_path: Path) -> None:
    path = _file(tmp_path, "d.bin", b"x" * 5000)
    cache = ds.HashCache(tmp_path / "h.json")
    cache.digest(path)
    cache.save()
    cache.forget([path, tmp_path / "never-hashed"])
    again, read = ds.HashCache(tmp_path / "h.json"), []
    again.digest(path, read.append)
    assert read == [5000]


def test_parsers_and_names_refuse_what_is_not_theirs() -> None:
    h = "a" * 64
    assert ds.stored_name(h) == f"sha256/aa/{h}"
    for bad in ("../x", "A" * 64, "a" * 63, f"{h}/.."):
        with pytest.raises(ValueError):
            ds.stored_name(bad)
    with pytest.raises(ValueError):
        ds.removal_paths([], ["../sha256"])
    probe = ds.parse_probe(f"/s/d\nH {h}\nP {'b' * 64} 12\nH junk\nP {'c' * 64} -1\n")
    assert (probe.absolute, probe.have, probe.partial) == ("/s/d", {h}, {"b" * 64: 12})
    with pytest.raises(ValueError):
        ds.parse_probe("mkdir: cannot create directory\n")
    assert ds.site_path("$HOME/x/.data") == "x/.data" and ds.site_path("/scratch/p/.data") == "/scratch/p/.data"


def test_site_commands_quote_the_store_path(tmp_path: Path) -> None:
    d = tmp_path / "it's a $(touch pwned) dir"
    s = DataStore(LocalTransport(), "bed")
    files = _data(tmp_path, {"a": b"1"})
    s.send(str(d), files, s.probe(str(d), [files[0].sha256]), "t")
    assert _stored(str(d), files[0]).read_bytes() == b"1"
    assert not (Path.cwd() / "pwned").exists() and not (tmp_path / "pwned").exists()


def test_a_tar_attempt_dir_with_old_mtimes_but_new_files_is_busy(store, tmp_path: Path) -> None:
    """tar sets a member's mtime from the archive: the age is the change time, which it cannot set."""
    s, d = store
    s.probe(d, [])
    member = Path(d) / "tmp" / "t.tok" / "ab" / ("ab" * 32)
    member.parent.mkdir(parents=True)
    member.write_bytes(b"x" * 10)
    os.utime(member, (0, 0))
    os.utime(member.parent.parent, (0, 0))
    listing = s.listing(d)
    assert list(listing.busy) == ["t.tok"] and listing.leftovers == {}
    s.remove(d, [], ["t.tok"])
    assert member.read_bytes() == b"x" * 10


def _linked_tree(tmp_path: Path, store_dir: str) -> tuple[Path, str, str, str]:
    """Job dirs under a root, linking into the store as submit links them (absolute targets)."""
    real = Path(os.path.realpath(store_dir))
    h1, h2, h3 = "a1" * 32, "b2" * 32, "c3" * 32
    for h in (h1, h2, h3):
        (real / "sha256" / h[:2]).mkdir(parents=True, exist_ok=True)
        (real / "sha256" / h[:2] / h).write_bytes(b"x")
    root = tmp_path / "jobs root"
    (root / "train-1" / "ds" / "sub").mkdir(parents=True)
    (root / "train-1" / "ds" / "sub" / "f").symlink_to(real / "sha256" / h1[:2] / h1)
    (root / "train-1" / "ds" / "g").symlink_to(real / "sha256" / h1[:2] / h1)  # twice: listed once
    (root / "other-2").mkdir()
    (root / "other-2" / "odd\nname").symlink_to(real / "sha256" / h2[:2] / h2)
    (root / "other-2" / "elsewhere").symlink_to(f"/not/the/store/sha256/{h3[:2]}/{h3}")
    (root / "plain-3").mkdir()
    (root / "plain-3" / "file").write_text(h3)
    return root, h1, h2, h3


def test_the_site_tells_which_job_dirs_link_into_the_store(store, tmp_path: Path) -> None:
    s, d = store
    absolute = s.probe(d, []).absolute
    root, h1, h2, h3 = _linked_tree(tmp_path, d)
    links = s.site_links([absolute], [str(root), str(tmp_path / "no such root")], 1)
    real_root = os.path.realpath(root)
    assert links.unreadable == []
    assert links.users == {
        (absolute, h1): {f"{real_root}/train-1"},
        (absolute, h2): {f"{real_root}/other-2"},  # a newline in the link's name does not hide it
    }
    # job dirs two levels below the root ({name}/{job}): the job dir is both components
    deeper = s.site_links([absolute], [str(tmp_path)], 2)
    assert deeper.users[(absolute, h1)] == {f"{real_root}/train-1"}
    # a link right under the root (above a job dir's depth) counts for the root itself
    (root / "stray").symlink_to(Path(absolute) / "sha256" / h3[:2] / h3)
    assert s.site_links([absolute], [str(root)], 1).users[(absolute, h3)] == {real_root}
    assert s.site_links([absolute], [], 1).users == {}


def test_an_unreadable_job_dir_is_reported(store, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every dir")
    s, d = store
    absolute = s.probe(d, []).absolute
    root, *_ = _linked_tree(tmp_path, d)
    (root / "plain-3").chmod(0)
    try:
        links = s.site_links([absolute], [str(root)], 1)
    finally:
        (root / "plain-3").chmod(0o700)
    assert links.unreadable == [os.path.realpath(root)]


def test_job_dirs_removed_during_the_scan_do_not_make_the_root_unreadable(store, tmp_path: Path) -> None:
    """Other job dirs removed while the site scans (the bed's other tests, a user's cleanup): what is
    still there is found, and the root does not count as unreadable (gc would then free nothing)."""
    import shutil
    import threading

    s, d = store
    absolute = s.probe(d, []).absolute
    root, h1, *_ = _linked_tree(tmp_path, d)
    for _ in range(3):
        doomed = [root / f"gone-{i}" / "a" / "b" for i in range(1500)]
        for path in doomed:
            path.mkdir(parents=True)
        remover = threading.Thread(target=lambda gone=doomed: [shutil.rmtree(p.parent.parent) for p in gone])
        remover.start()
        links = s.site_links([absolute], [str(root)], 1)
        remover.join()
        assert links.unreadable == []
        assert links.users[(absolute, h1)] == {os.path.join(os.path.realpath(root), "train-1")}


def test_links_command_quotes_and_escapes_paths(tmp_path: Path) -> None:
    """A store path with glob characters matches itself alone; a path with quotes runs nothing."""
    s = DataStore(LocalTransport(), "bed")
    weird = tmp_path / "st[o]re's $(touch pwned) *"
    other = tmp_path / "sto re's $(touch pwned) *"  # what the glob [o] would also match
    absolute = s.probe(str(weird), []).absolute
    other_abs = s.probe(str(other), []).absolute
    root = tmp_path / "r"
    (root / "j-1").mkdir(parents=True)
    h = "d4" * 32
    (root / "j-1" / "a").symlink_to(f"{absolute}/sha256/{h[:2]}/{h}")
    (root / "j-1" / "b").symlink_to(f"{other_abs}/sha256/{h[:2]}/{h}")
    links = s.site_links([absolute], [str(root)], 1)
    assert links.users == {(absolute, h): {f"{os.path.realpath(root)}/j-1"}}
    assert not (tmp_path / "pwned").exists() and not (Path.cwd() / "pwned").exists()
    parsed = ds.parse_links(f"/s\t{h}\t/r/j-1\n/s\tjunk\t/r/j\nUNREAD\t/r2\nnoise\n")
    assert parsed.users == {("/s", h): {"/r/j-1"}} and parsed.unreadable == ["/r2"]


@pytest.mark.parametrize(
    ("site", "account"),
    [("jupiter", "exalab"), ("karolina", "EU-25-10"), ("deucalion", "f202500017aivlabdeucaliong"), ("vega", "x")],
)
def test_the_job_dir_root_is_the_workdir_up_to_the_job(site: str, account: str) -> None:
    from aifactory_cli.backends.slurm import SlurmBackend
    from aifactory_cli.jobs.model import Job
    from aifactory_cli.sites.profile import load_profile

    backend = SlurmBackend(load_profile(site), LocalTransport())
    job = Job(id="abc", token="t" * 32, name="t", site=site, state="PREPARED", created_at="", updated_at="")
    workdir = backend.workdir_for(job, account, "jdoe")
    assert backend.jobs_root_for(account, "jdoe") == (workdir.rpartition("/")[0], 1)


def test_a_workdir_with_the_name_above_the_job_scans_from_above_the_name(tmp_path: Path) -> None:
    from aifactory_cli.backends.slurm import SlurmBackend
    from aifactory_cli.sites.profile import load_profile_file

    path = tmp_path / "mine.yaml"
    path.write_text("extends: lumi\nworkdir: /scratch/{account}/{user}/runs/{name}/{job}\n")
    backend = SlurmBackend(load_profile_file(path), LocalTransport())
    assert backend.jobs_root_for("project_1", "jdoe") == ("/scratch/project_1/jdoe/runs", 2)


def test_what_a_submission_stored_or_found_lately_is_kept_by_removal(store, tmp_path: Path) -> None:
    """Between a submission's probe (or its send) and its job's links, gc must not free the entry."""
    s, d = store
    files = _data(tmp_path, {"small": b"s", "large": b"L" * (ds.LARGE + 1)})
    s.send(d, files, s.probe(d, [f.sha256 for f in files]), "t")
    listing = s.listing(d)
    assert listing.recent == {f.sha256 for f in files}  # just stored, small (tar) and large (dd) alike
    old = time.time() - 2 * 3600
    for f in files:
        os.utime(_stored(d, f), (old, old))
    assert s.listing(d).recent == set()
    assert s.probe(d, [files[0].sha256]).have == {files[0].sha256}  # found: touched
    assert s.listing(d).recent == {files[0].sha256}
    s.remove(d, [f.sha256 for f in files], [])
    assert _stored(d, files[0]).exists() and not _stored(d, files[1]).exists()


def _openssl(tmp_path: Path, kind: str) -> Path:
    """A directory whose `openssl` logs each use and runs the real one ("logged"), exits 1 ("broken")
    or prints a wrong digest ("lying"); put first on PATH."""
    fake = tmp_path / f"bin-{kind}"
    fake.mkdir()
    real = "/usr/bin/openssl"
    body = {
        "logged": f'echo "$*" >> {fake}/used; exec {real} "$@"',
        "broken": "exit 1",
        "lying": "cat > /dev/null; echo 0000000000000000000000000000000000000000000000000000000000000000 '*stdin'",
    }[kind]
    (fake / "openssl").write_text(f"#!/bin/sh\n{body}\n")
    (fake / "openssl").chmod(0o755)
    return fake


@pytest.mark.skipif(not os.path.exists("/usr/bin/openssl"), reason="needs openssl")
@pytest.mark.parametrize("kind", ["logged", "broken", "lying"])
def test_the_site_hashes_with_openssl_where_it_works_else_sha256sum(
    kind: str, store, tmp_path: Path, monkeypatch
) -> None:
    fake = _openssl(tmp_path, kind)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    s, d = store
    small = _data(tmp_path, {"a.txt": b"alpha", "b/c.txt": b"gamma" * 100})
    assert s.send(d, small, s.probe(d, [f.sha256 for f in small]), "t1").files_sent == 2
    monkeypatch.setattr(ds, "LARGE", 1000)
    (big,) = _data(tmp_path, {"big.bin": os.urandom(5000)})
    assert s.send(d, [big], s.probe(d, [big.sha256]), "t2").bytes_sent == 5000
    for f in [*small, big]:
        assert hashlib.sha256(_stored(d, f).read_bytes()).hexdigest() == f.sha256
    used = (fake / "used").read_text().splitlines() if (fake / "used").exists() else []
    # two empty-input checks, the small files' stream, the large file (all stdin): no file read again
    assert not any(line.startswith("dgst -sha256 -r ./") for line in used), used
    assert (kind == "logged") == (used.count("dgst -sha256 -r") == 4), used
    (other,) = _data(tmp_path, {"other.bin": os.urandom(5000)})
    (tmp_path / "src" / "other.bin").write_bytes(os.urandom(5000))  # changed after hashing: refused
    with pytest.raises(DataMismatch, match=r"other\.bin"):
        s.send(d, [other], s.probe(d, [other.sha256]), "t3")


@pytest.mark.skipif(not os.path.exists("/usr/bin/openssl"), reason="needs openssl")
def test_a_stream_the_site_hashed_otherwise_is_checked_file_by_file(store, tmp_path: Path, monkeypatch) -> None:
    """The site's digest of the small files' stream is not the one written here: each file is hashed
    again by name, and the ones that match are stored (here all: only the stream's hash lied)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "openssl").write_text(
        "#!/bin/sh\n"
        'if [ "$#" -gt 3 ]; then echo "$*" >> ' + str(fake) + '/named; exec /usr/bin/openssl "$@"; fi\n'
        'if [ "$(head -c 1 | wc -c)" -eq 0 ]; then echo "' + ds.EMPTY_SHA256 + ' *stdin"; exit 0; fi\n'
        'cat > /dev/null; echo "' + "0" * 64 + ' *stdin"\n'
    )
    (fake / "openssl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    s, d = store
    small = _data(tmp_path, {"a.txt": b"alpha", "b/c.txt": b"gamma" * 100})
    assert s.send(d, small, s.probe(d, [f.sha256 for f in small]), "t1").files_sent == 2
    for f in small:
        assert hashlib.sha256(_stored(d, f).read_bytes()).hexdigest() == f.sha256
    assert (fake / "named").read_text().count("./") == 2  # both files read again, by name
    assert list((Path(d) / "tmp").iterdir()) == []


def test_the_probe_looks_for_a_partial_copy_only_of_a_large_file(store, tmp_path: Path) -> None:
    s, d = store
    (f,) = _data(tmp_path, {"x.bin": b"x" * 100})
    s.probe(d, [])  # makes the store
    (Path(d) / "tmp" / f"{f.sha256}.part").write_bytes(b"x" * 40)
    assert s.probe(d, [f.sha256]).partial == {f.sha256: 40}
    assert s.probe(d, [f"s:{f.sha256}"]).partial == {}  # a small file's: sent whole in the tar
    s.send(d, [f], s.probe(d, [f.sha256]), "t")
    assert s.probe(d, [f"s:{f.sha256}"]).have == {f.sha256}


def test_a_deferred_commit_runs_first_in_the_submission_and_its_failure_stops_it(store, tmp_path: Path) -> None:
    """`send(defer_commit=True)`: a stream that arrived whole is moved into the store by the job
    submission's own round trip (`UploadPlan.add_prelude`), not one more; when that move fails, the
    staging stops before the job dir is made (so nothing is submitted) and the error says why."""
    from aifactory_cli.backends.slurm import SlurmBackend
    from aifactory_cli.jobs.model import Job
    from aifactory_cli.jobs.staging import UploadPlan, prelude_failure, stage_commands
    from aifactory_cli.sites.profile import load_profile

    s, d = store
    files = _data(tmp_path, {"a": b"alpha", "b": b"beta"})
    sent = s.send(d, files, s.probe(d, [f.sha256 for f in files]), "tok1", defer_commit=True)
    assert sent.commit and sent.files_sent == 2
    assert not any(_stored(d, f).exists() for f in files)  # still in the attempt dir
    plan = UploadPlan()
    plan.add_prelude(sent.commit, f"the data sent were not moved into the store {d}")
    job_dir = tmp_path / "jobs" / "j1"
    done = LocalTransport().run(" && ".join(stage_commands(str(job_dir), None, plan.prelude)), stdin=b"\0" * 1024)
    assert done.ok, done.stderr
    assert all(_stored(d, f).read_bytes() == f.path.read_bytes() for f in files)  # type: ignore[union-attr]
    assert job_dir.is_dir() and not list((Path(d) / "tmp").iterdir())
    plan.send_everything()  # a cache miss makes the staging run again: the prelude ran already
    assert plan.prelude == []

    more = _data(tmp_path, {"c": b"gamma"})
    sent = s.send(d, more, s.probe(d, [more[0].sha256]), "tok2", defer_commit=True)
    for attempt in (Path(d) / "tmp").iterdir():  # the attempt dir is lost before the submission runs
        os.system(f"chmod -R u+w '{attempt}' && rm -rf '{attempt}'")
    plan = UploadPlan()
    plan.add_prelude(sent.commit or "", f"the data sent were not moved into the store {d}")
    job_dir = tmp_path / "jobs" / "j2"
    failed = LocalTransport().run(" && ".join(stage_commands(str(job_dir), None, plan.prelude)), stdin=b"\0" * 1024)
    assert not failed.ok and not job_dir.exists()
    assert prelude_failure(failed.stderr) == (
        f"the data sent were not moved into the store {d}: the unpacked files are gone from tmp/t.tok2"
    )
    assert prelude_failure("sbatch: error: Batch job submission failed\n") is None
    # through the Slurm backend: exit 3, nothing queued (sbatch never ran: the prelude stopped the chain)
    backend = SlurmBackend(load_profile("lumi"), LocalTransport())
    job = Job(id="j3", token="t" * 32, name="t", site="lumi", state="PREPARED", created_at="", updated_at="")
    with pytest.raises(RemoteError) as err:
        backend.submit(job, plan, str(tmp_path / "jobs" / "j3"))
    assert err.value.exit_code == EXIT_REMOTE and err.value.queued == "no"
    assert str(err.value).startswith(f"the data sent were not moved into the store {d}: the unpacked files are gone")
    assert not (tmp_path / "jobs" / "j3").exists()
