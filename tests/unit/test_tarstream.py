"""transport.tarstream: the data store's tar writer, read back by tarfile and by GNU tar (what the site runs)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from aifactory_cli.transport import tarstream
from aifactory_cli.transport.tarstream import RECORD, LocalTar, TarReader, TarWriter

SHORT = "tmp/t.tok/ab/" + "a" * 64
PREFIXED = "tmp/t.tok/trees/" + "t" * 64 + "/d00/" + "f" * 80  # over 100 bytes: prefix + name
LONG = "tmp/t.tok/trees/" + "t" * 64 + "/" + "x" * 120 + "/y"  # no cut fits: a GNU `L` record
LINK_TARGET = "tmp/t." + "k" * 90 + "/ab/" + "a" * 64  # over 100 bytes: a GNU `K` record


def stream(tmp_path: Path) -> tuple[bytes, dict[str, bytes]]:
    contents = {SHORT: os.urandom(1000), "tmp/t.tok/cd/é-ü": b"", "tmp/t.tok/ef/" + "b" * 64: os.urandom(512)}
    contents[LINK_TARGET] = os.urandom(3)
    out = io.BytesIO()
    tar = TarWriter(out)
    seen: list[int] = []
    for name, data in contents.items():
        tar.add_file(name, io.BytesIO(data), len(data), 0o400, 1_700_000_000, seen.append)
    tar.add_link(PREFIXED.encode(), SHORT.encode(), 1_700_000_000)
    tar.add_link(LONG.encode(), SHORT.encode(), 1_700_000_000)
    tar.add_link(b"tmp/t.tok/trees/short", LINK_TARGET.encode(), 1_700_000_000)
    tar.close()
    assert sum(seen) == sum(map(len, contents.values()))
    return out.getvalue(), contents


def test_tarfile_reads_every_member_as_written(tmp_path: Path) -> None:
    data, contents = stream(tmp_path)
    assert len(data) % RECORD == 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        members = []
        for m in tar:
            members.append((m.name, m.type, m.linkname, m.mode, m.mtime))
            if m.isreg():
                f = tar.extractfile(m)
                assert f is not None
                assert f.read() == contents[m.name]
    assert [m[0] for m in members] == [*contents, PREFIXED, LONG, "tmp/t.tok/trees/short"]
    assert {m[1] for m in members[: len(contents)]} == {tarfile.REGTYPE}
    assert [m[2] for m in members[len(contents) :]] == [SHORT, SHORT, LINK_TARGET]
    assert all(m[3] == 0o400 and m[4] == 1_700_000_000 for m in members)


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar")
def test_gnu_tar_extracts_files_and_hard_links(tmp_path: Path) -> None:
    data, contents = stream(tmp_path)
    into = tmp_path / "x"
    into.mkdir()
    subprocess.run(["tar", "-x", "-f", "-"], input=data, cwd=into, check=True)
    for name, body in contents.items():
        assert (into / name).read_bytes() == body
    for link, target in ((PREFIXED, SHORT), (LONG, SHORT), ("tmp/t.tok/trees/short", LINK_TARGET)):
        assert (into / link).stat().st_ino == (into / target).stat().st_ino


def test_a_file_that_shrank_is_an_error() -> None:
    tar = TarWriter(io.BytesIO())
    with pytest.raises(OSError, match="shorter"):
        tar.add_file("a", io.BytesIO(b"abc"), 10, 0o400, 0)


def test_a_size_beyond_the_header_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        TarWriter(io.BytesIO()).add_file("a", io.BytesIO(), 8**11, 0o400, 0)


def _members_by_tarfile(data: bytes) -> list[tuple[str, bytes, int, int, int, str, bytes]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        for m in tar:
            body = b""
            if m.isreg():
                f = tar.extractfile(m)
                assert f is not None
                body = f.read()
            out.append((m.name, m.type, m.size if m.isreg() else 0, m.mode, int(m.mtime), m.linkname, body))
    return out


def _members_by_reader(data: bytes) -> list[tuple[str, bytes, int, int, int, str, bytes]]:
    reader = TarReader(io.BytesIO(data))
    out = []
    for m in reader:
        body = b"".join(reader.data(m)) if m.regular else b""
        out.append((m.name, m.type, m.size if m.regular else 0, m.mode, m.mtime, m.linkname, body))
    return out


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_the_reader_reads_what_tarfile_reads_in_every_format(fmt: int) -> None:
    out = io.BytesIO()
    names = ["a.txt", "d/" + "n" * 120 + "/f.bin", "ünï/çødé.txt", "empty"]
    if fmt != tarfile.USTAR_FORMAT:  # a name ustar cannot hold (no prefix/name cut fits)
        names.append("d/" + "x" * 140)
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for i, name in enumerate(names):
            body = os.urandom(i * 700)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(body), 0o640 + i, 1_600_000_000 + i
            tar.addfile(info, io.BytesIO(body))
        d = tarfile.TarInfo("d")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        link = tarfile.TarInfo("l" * 90)
        link.type, link.linkname = tarfile.SYMTYPE, "t" * (90 if fmt == tarfile.USTAR_FORMAT else 120)
        tar.addfile(link)
    data = out.getvalue()
    assert _members_by_reader(data) == _members_by_tarfile(data)


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar")
def test_the_reader_reads_gnu_tars_own_stream(tmp_path: Path) -> None:
    """What the site sends: `tar -c` (backends.fetching), long names included."""
    src = tmp_path / "src"
    deep = src / ("p" * 90) / ("q" * 90)
    deep.mkdir(parents=True)
    (deep / ("r" * 80)).write_bytes(os.urandom(5000))
    (src / "top.txt").write_bytes(b"top")
    names = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
    data = subprocess.run(
        ["tar", "-c", "-f", "-", "--null", "-T", "-"],
        input=b"".join(n.encode() + b"\0" for n in names),
        cwd=src,
        capture_output=True,
        check=True,
    ).stdout
    got = _members_by_reader(data)
    assert got == _members_by_tarfile(data)
    assert sorted(m[0] for m in got) == names


def test_a_cut_or_damaged_stream_is_a_tar_error() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("f")
        info.size = 4000
        tar.addfile(info, io.BytesIO(os.urandom(4000)))
    data = out.getvalue()
    with pytest.raises(tarfile.TarError, match="ends inside"):
        _members_by_reader(data[:2000])
    damaged = bytearray(data)
    damaged[10] ^= 0xFF
    with pytest.raises(tarfile.TarError, match="checksum"):
        _members_by_reader(bytes(damaged))


def test_a_local_tar_listing_round_trips_odd_names_and_refuses_what_is_not_one(tmp_path: Path) -> None:
    odd = "d/sp ace\nnew\udcffline"  # a newline, a space, a byte that is not UTF-8
    path = str(tmp_path / "a file")
    tar = LocalTar(LocalTar.file_record(odd, path, 7, 0o400, 12) + LocalTar.link_record("t/" + odd, odd, 13))
    assert list(tar.records()) == [(odd, path, 7, 0o400, 12, ""), ("t/" + odd, odd, 13)]
    with pytest.raises(ValueError, match="absolute paths"):
        LocalTar.file_record("a", "rel/a", 1, 0o400, 0)
    for damaged in (b"F\0a\0/x\0nine\0", b"Q\0a\0", b"F\0a\0rel\0" + b"1\0" * 3, b"L\0a\0b\0x\0"):
        with pytest.raises(ValueError, match="not a tar listing"):
            LocalTar(damaged).check()


def test_a_local_tar_gives_its_streams_digest_and_the_files_that_changed_since_they_were_hashed(
    tmp_path: Path,
) -> None:
    same, moved = tmp_path / "same", tmp_path / "moved"
    same.write_bytes(b"kept")
    moved.write_bytes(b"now")
    listing = LocalTar.file_record("s", str(same), 4, 0o400, 1, hashlib.sha256(b"kept").hexdigest())
    listing += LocalTar.file_record("m", str(moved), 3, 0o400, 1, hashlib.sha256(b"was").hexdigest())
    listing += LocalTar.file_record("u", str(moved), 3, 0o400, 1)  # no digest: not checked
    tar, out = LocalTar(listing), io.BytesIO()
    tar(out)
    assert tar.sha256 == hashlib.sha256(out.getvalue()).hexdigest()
    assert tar.changed == ["m"]
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as written:
        assert [m.name for m in written.getmembers()] == ["s", "m", "u"]


def test_a_local_tar_reads_small_files_whole_and_large_ones_in_chunks_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small files (up to WHOLE bytes) are read in one piece, larger ones through add_file's loop:
    the same members either way, a file that grew since it was listed gives its first bytes and is
    named as changed, and progress comes in steps of PROGRESS bytes and once at the end."""
    monkeypatch.setattr(tarstream, "WHOLE", 100)
    monkeypatch.setattr(tarstream, "PROGRESS", 150)
    bodies = {"a": os.urandom(60), "b": os.urandom(100), "c": os.urandom(250), "d": b""}
    listing = b""
    for name, body in bodies.items():
        (tmp_path / name).write_bytes(body)
        digest = hashlib.sha256(body).hexdigest()
        listing += LocalTar.file_record(name, str(tmp_path / name), len(body), 0o400, 1, digest)
    grown = tmp_path / "g"
    grown.write_bytes(b"12345" + b"more")  # listed at 5 bytes, now 9
    listing += LocalTar.file_record("g", str(grown), 5, 0o400, 1, hashlib.sha256(b"other").hexdigest())
    steps: list[int] = []
    tar, out = LocalTar(listing, steps.append), io.BytesIO()
    tar(out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as written:
        got = {m.name: written.extractfile(m).read() for m in written.getmembers()}  # type: ignore[union-attr]
    assert got == {**bodies, "g": b"12345"}
    assert tar.changed == ["g"]
    assert tar.sha256 == hashlib.sha256(out.getvalue()).hexdigest()
    assert sum(steps) == 60 + 100 + 250 + 5
    assert steps[0] == 60 + 100  # a and b in one step (c goes through the loop, which reports itself)


def test_a_small_file_that_shrank_since_it_was_listed_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "s").write_bytes(b"abc")
    with pytest.raises(OSError, match="shorter"):
        LocalTar(LocalTar.file_record("s", str(tmp_path / "s"), 10, 0o400, 1))(io.BytesIO())


def test_a_damaged_pax_header_is_a_tar_error_not_a_bug() -> None:
    """A transfer's damage must stay exit 3 (a TarError), never an uncaught ValueError (exit 70)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("ü")  # non-ASCII: a pax header with `path`
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    data = bytearray(out.getvalue())
    pax = data.index(b" path=")
    for damage in (b"x", b"Z"):
        bad = bytearray(data)
        bad[pax - 2 : pax - 1] = damage  # the record's length is no number any more
        head = bytes(bad[:512])  # its header's checksum stays right: only the pax data changed
        with pytest.raises(tarfile.TarError, match="pax"):
            _members_by_reader(head + bytes(bad[512:]))
    sized = bytes(data).replace(b" path=", b" size=", 1)  # `size=ü`: not a number
    with pytest.raises(tarfile.TarError, match="pax"):
        _members_by_reader(sized)
