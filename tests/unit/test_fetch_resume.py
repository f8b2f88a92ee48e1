"""`fetch` checks every file against the site's sha256 and resumes a large file cut midway: the
partial copy waits in DEST/.aif-partial/ for the next fetch, which asks the site only for the rest;
a copy that does not match is dropped, an error naming the file (exit 3)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from fakes import Session, fake_site, spec

from aifactory_cli.backends import fetching
from aifactory_cli.errors import EXIT_REMOTE, RemoteError
from aifactory_cli.jobs.store import Job

SITE = "fakesite"
BIG = os.urandom(1_200_000)


@pytest.fixture
def session(aif_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    monkeypatch.setattr(fetching, "LARGE", 1_000_000)  # model.bin is large, log.txt small
    return fake_site(tmp_path, monkeypatch)


def job_with_output(session: Session, tmp_path: Path) -> Job:
    with session() as svc:
        job = svc.submit(svc.prepare(spec(tmp_path, "out", 'run: echo hi\ndownload: ["out/**"]\n'), SITE))
    out = Path(job.workdir or "") / "out"
    out.mkdir()
    (out / "model.bin").write_bytes(BIG)
    (out / "log.txt").write_text("done\n")
    return job


def tree(dest: Path) -> list[str]:
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())


def cut_after(session: Session, keep: int) -> Any:
    """A run_to_file whose connection drops once `keep` bytes of this run are written."""
    real = session.fake.run_to_file

    def cut(command: Any, local: Path, **kw: Any) -> Any:
        before = local.stat().st_size if local.exists() else 0
        real(command, local, **kw)
        with open(local, "r+b") as fh:
            fh.truncate(before + keep)
        raise RemoteError("the connection to fake.invalid was lost while a command was running")

    return cut


def test_a_large_file_cut_midway_resumes_and_is_checked(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = job_with_output(session, tmp_path)
    dest = tmp_path / "got"
    real = session.fake.run_to_file
    monkeypatch.setattr(session.fake, "run_to_file", cut_after(session, 500_000))
    with session() as svc, pytest.raises(RemoteError) as err:
        svc.fetch(job.id, dest)
    assert err.value.exit_code == EXIT_REMOTE
    assert "out/model.bin (500,000 bytes)" in err.value.message and ".aif-partial" in err.value.message
    assert sorted(p.suffix for p in (dest / ".aif-partial").iterdir()) == [".json", ".part"]
    assert not (dest / "out").exists()
    monkeypatch.setattr(session.fake, "run_to_file", real)
    with session() as svc:
        done = svc.fetch(job.id, dest)
    assert tree(dest) == ["out/log.txt", "out/model.bin"]  # the partial dir is gone
    assert (dest / "out" / "model.bin").read_bytes() == BIG
    assert (done.resumed, done.checked) == (500_000, 2)
    assert 700_000 <= done.bytes < 700_000 + 20_000  # the rest of model.bin, and log.txt in a tar
    tail = [c for c in session.fake.commands if "tail -c +500001" in c]
    assert len(tail) == 1, session.fake.commands


def test_a_partial_copy_of_a_file_that_changed_since_is_not_resumed(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = job_with_output(session, tmp_path)
    dest = tmp_path / "got"
    real = session.fake.run_to_file
    monkeypatch.setattr(session.fake, "run_to_file", cut_after(session, 500_000))
    with session() as svc, pytest.raises(RemoteError):
        svc.fetch(job.id, dest)
    monkeypatch.setattr(session.fake, "run_to_file", real)
    new = os.urandom(1_100_000)
    (Path(job.workdir or "") / "out" / "model.bin").write_bytes(new)  # rewritten by the job meanwhile
    with session() as svc:
        done = svc.fetch(job.id, dest)
    assert (dest / "out" / "model.bin").read_bytes() == new and done.resumed == 0


def test_a_large_copy_that_does_not_match_the_site_is_dropped_naming_the_file(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = job_with_output(session, tmp_path)
    dest = tmp_path / "got"
    real = session.fake.run_to_file

    def flipped(command: Any, local: Path, **kw: Any) -> Any:
        done = real(command, local, **kw)
        data = bytearray(local.read_bytes())
        data[1000] ^= 1
        local.write_bytes(bytes(data))
        done.sha256 = hashlib.sha256(data).hexdigest()  # what the writer saw
        return done

    monkeypatch.setattr(session.fake, "run_to_file", flipped)
    with session() as svc, pytest.raises(fetching.ChecksumMismatch) as err:
        svc.fetch(job.id, dest)
    assert err.value.exit_code == EXIT_REMOTE and "out/model.bin" in err.value.message
    assert hashlib.sha256(BIG).hexdigest() in err.value.message  # the site's digest
    assert tree(dest) == []  # no copy under the final name, no partial copy kept


def test_a_small_copy_that_does_not_match_the_site_is_an_error_naming_the_file(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = job_with_output(session, tmp_path)
    dest = tmp_path / "got"

    def other_tar(workdir: str, files: list[str], local_archive: Path, progress: Any = None) -> None:
        with open(local_archive, "wb") as fh, tarfile.open(fileobj=fh, mode="w|") as tar:
            for name in files:
                data = b"not what the site has\n"
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    monkeypatch.setattr(session.fake, "get_tar", other_tar)
    with session() as svc, pytest.raises(fetching.ChecksumMismatch, match=r"out/log\.txt") as err:
        svc.fetch(job.id, dest)
    assert err.value.exit_code == EXIT_REMOTE and "nothing was written" in err.value.message
    assert tree(dest) == []


def test_the_listing_keeps_sizes_and_falls_back_to_names() -> None:
    listed = fetching.parse_listing("F 12 1700000000.5 a b.txt\nF 0 1.0 d/e\n./only-name\nnoise\n")
    assert listed == {
        "a b.txt": fetching.Listed(12, "1700000000.5"),
        "d/e": fetching.Listed(0, "1.0"),
        "only-name": fetching.Listed(0, ""),
    }


def test_a_sweep_elements_large_file_cut_midway_resumes_too(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An element's files come through DEST/.aif-fetch/ (then under the element's name): a cut there
    keeps its partial copy for the next fetch, and leaves nothing else behind."""
    body = 'matrix: [{LR: "0.1"}, {LR: "0.2"}]\nrun: echo $LR\ndownload: ["out/**"]\n'
    with session() as svc:
        job = svc.submit(svc.prepare(spec(tmp_path, "sw", body), SITE))
    for n in (0, 1):
        out = Path(job.workdir or "") / "elements" / str(n) / "out"
        out.mkdir(parents=True)
        (out / "model.bin").write_bytes(BIG if n == 0 else BIG[::-1])
        (out / "log.txt").write_text(f"element {n}\n")
    dest = tmp_path / "got"
    real = session.fake.run_to_file
    monkeypatch.setattr(session.fake, "run_to_file", cut_after(session, 500_000))
    with session() as svc, pytest.raises(RemoteError) as err:
        svc.fetch(job.id, dest)
    assert err.value.exit_code == EXIT_REMOTE and "(500,000 bytes)" in err.value.message
    assert tree(dest)[0].startswith(".aif-fetch/.aif-partial/") and len(tree(dest)) == 2  # .part and .json
    monkeypatch.setattr(session.fake, "run_to_file", real)
    with session() as svc:
        done = svc.fetch(job.id, dest)
    assert tree(dest) == [
        "0_LR=0.1/out/log.txt",
        "0_LR=0.1/out/model.bin",
        "1_LR=0.2/out/log.txt",
        "1_LR=0.2/out/model.bin",
    ]
    assert (dest / "0_LR=0.1" / "out" / "model.bin").read_bytes() == BIG
    assert (dest / "1_LR=0.2" / "out" / "model.bin").read_bytes() == BIG[::-1]
    assert (done.resumed, done.checked) == (500_000, 4)
