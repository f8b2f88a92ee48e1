"""fetch unpacks the tar stream as it arrives (a FIFO read by a thread): no archive on disk, and the
error that explains a failure is the one raised, with no hang whichever side fails first."""

from __future__ import annotations

import errno
import io
import os
import tarfile
import threading
from pathlib import Path

import pytest

from aifactory_cli.backends import fetching
from aifactory_cli.backends.fetching import Unpacker as _Unpacker


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _write(fifo: Path, data: bytes) -> None:
    with open(fifo, "wb") as fh:
        for i in range(0, len(data), 100_000):
            fh.write(data[i : i + 100_000])


def test_a_stream_larger_than_the_pipe_is_unpacked_and_no_archive_is_left(tmp_path: Path) -> None:
    big = os.urandom(3 << 20)  # far over the 64 KiB a pipe holds
    data = _tar({"ckpt/model.pt": big, "log.txt": b"done\n"})
    with _Unpacker(tmp_path / "fetch.tar", tmp_path / "files") as fifo, open(fifo, "wb") as fh:
        for i in range(0, len(data), 100_000):
            fh.write(data[i : i + 100_000])
    assert (tmp_path / "files" / "ckpt" / "model.pt").read_bytes() == big
    assert (tmp_path / "files" / "log.txt").read_bytes() == b"done\n"
    assert (tmp_path / "fetch.tar").is_fifo()  # a pipe, never a copy of the data


def test_a_writer_that_fails_before_opening_the_fifo_does_not_hang_and_its_error_stands(tmp_path: Path) -> None:
    def run() -> None:
        with _Unpacker(tmp_path / "fetch.tar", tmp_path / "files"):
            raise ConnectionResetError("the connection dropped before any byte")

    def attempt() -> None:
        with pytest.raises(ConnectionResetError):
            run()

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "fetch hung waiting for a writer that never came"


def test_a_cut_stream_raises_the_writers_error_not_the_truncated_archive(tmp_path: Path) -> None:
    data = _tar({"a.bin": os.urandom(1 << 20)})
    with pytest.raises(EOFError, match="cut"), _Unpacker(tmp_path / "fetch.tar", tmp_path / "files") as fifo:
        with open(fifo, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise EOFError("cut at half")


def test_a_full_local_disk_is_the_error_even_though_the_writer_saw_a_broken_pipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*a: object, **k: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fetching, "extract_stream", full)
    data = _tar({"a.bin": os.urandom(4 << 20)})
    with pytest.raises(OSError) as info, _Unpacker(tmp_path / "fetch.tar", tmp_path / "files") as fifo:
        _write(fifo, data)  # the reader closed: EPIPE (BrokenPipeError) here
    assert info.value.errno == errno.ENOSPC


def test_a_damaged_archive_is_a_tar_error(tmp_path: Path) -> None:
    with pytest.raises(tarfile.TarError), _Unpacker(tmp_path / "fetch.tar", tmp_path / "files") as fifo:
        _write(fifo, b"this is not a tar archive at all" * 100)


def test_a_damaged_archive_longer_than_the_pipe_is_still_a_tar_error(tmp_path: Path) -> None:
    with pytest.raises(tarfile.TarError), _Unpacker(tmp_path / "fetch.tar", tmp_path / "files") as fifo:
        _write(fifo, b"this is not a tar archive at all" * 100_000)  # the reader has gone: EPIPE here


@pytest.mark.parametrize(
    "member",
    ["../escape.txt", "/etc/evil", "a/../../escape", "link", "hard", "fifo"],
)
def test_what_is_not_a_plain_file_under_the_job_dir_is_refused(tmp_path: Path, member: str) -> None:
    """fetch asks the site only for regular files: a name that climbs out, a link, a device or a
    FIFO in the archive is a damaged archive, and nothing is created outside the dir."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("ok.txt"), io.BytesIO(b""))
        info = tarfile.TarInfo(member)
        if member == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif member == "hard":
            info.type, info.linkname = tarfile.LNKTYPE, "ok.txt"
        elif member == "fifo":
            info.type = tarfile.FIFOTYPE
        else:
            info.size = 4
        tar.addfile(info, io.BytesIO(b"evil") if info.size else None)
    refused = pytest.raises(tarfile.TarError, match="not a plain file")
    with refused, _Unpacker(tmp_path / "fetch.tar", tmp_path / "files") as fifo:
        _write(fifo, buf.getvalue())
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["fetch.tar", "files", "files/ok.txt"]


def test_modes_and_mtimes_come_through_and_nested_dirs_are_made(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, mode in (("bin/run.sh", 0o4755), ("deep/a/b/c.txt", 0o666)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = 3, mode, 1_700_000_000
            tar.addfile(info, io.BytesIO(b"abc"))
    with _Unpacker(tmp_path / "fetch.tar", tmp_path / "files") as fifo:
        _write(fifo, buf.getvalue())
    run, deep = tmp_path / "files" / "bin" / "run.sh", tmp_path / "files" / "deep" / "a" / "b" / "c.txt"
    assert run.stat().st_mode & 0o7777 == 0o755 & ~_umask()  # no setuid from the site
    assert deep.stat().st_mode & 0o7777 == 0o644 & ~_umask()  # no group/other write
    assert run.stat().st_mtime == deep.stat().st_mtime == 1_700_000_000
    assert deep.read_bytes() == b"abc"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_dir_the_destination_lacks_moves_in_by_one_rename_the_others_file_by_file(tmp_path: Path) -> None:
    unpacked, dest = tmp_path / "staging", tmp_path / "dest"
    for name in ("new/a", "new/deep/b", "old/c", "top.txt"):
        (unpacked / name).parent.mkdir(parents=True, exist_ok=True)
        (unpacked / name).write_text(name)
    (dest / "old").mkdir(parents=True)
    (dest / "old" / "kept").write_text("was there")
    inode = (unpacked / "new").stat().st_ino
    moved = fetching.move_new_dirs(unpacked, dest, ["new/a", "new/deep/b", "old/c", "top.txt"])
    assert moved == {"new/a", "new/deep/b"}
    assert (dest / "new").stat().st_ino == inode  # the dir itself, renamed
    assert (dest / "new" / "deep" / "b").read_text() == "new/deep/b"
    assert (unpacked / "old" / "c").exists() and not (dest / "old" / "c").exists()  # left to the caller
    assert (dest / "old" / "kept").read_text() == "was there"
