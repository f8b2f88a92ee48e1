"""A fetch's tar of small files is hashed on the site as tar writes it (`transport.tofile.tar_command`,
run here in a real bash with GNU tar, as on a login node) and here as it arrives: the same digest with
tar's exit status 0 settles every file; anything else leaves it to the check of each file."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from aifactory_cli.errors import RemoteError
from aifactory_cli.transport.local import LocalTransport
from aifactory_cli.transport.tofile import ToFile, check_tar, tar_command, tar_names


def _fetch(tmp_path: Path, names: list[str]) -> tuple[ToFile, bytes]:
    out = tmp_path / "out.tar"
    done = LocalTransport().run_to_file(tar_command(str(tmp_path / "w")), out, stdin=tar_names(names), digest=True)
    return done, out.read_bytes()


def test_a_whole_stream_is_settled_by_its_digest_on_both_ends(tmp_path: Path) -> None:
    (tmp_path / "w" / "d").mkdir(parents=True)
    (tmp_path / "w" / "a b.txt").write_bytes(b"alpha")
    (tmp_path / "w" / "d" / "-c").write_bytes(b"gamma" * 3000)
    done, data = _fetch(tmp_path, ["a b.txt", "d/-c"])
    assert done.sha256 == hashlib.sha256(data).hexdigest()
    assert check_tar(done, "w", "local") is True
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert [m.name for m in tar.getmembers()] == ["a b.txt", "d/-c"]
    assert "AIF-TAR rc=0" in done.stderr
    # what arrived is not what the site hashed: not settled (each file is checked then)
    assert check_tar(ToFile(done.rc, done.stderr, done.written, "0" * 64), "w", "local") is False


def test_a_file_tar_cannot_read_is_an_error_and_one_it_saw_change_is_left_to_the_check_of_each(
    tmp_path: Path,
) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "a").write_bytes(b"a")
    done, _ = _fetch(tmp_path, ["a", "gone"])
    with pytest.raises(RemoteError, match=r"cannot pack files in w on local: .*gone") as err:
        check_tar(done, "w", "local")
    assert "AIF-TAR" in done.stderr and "AIF-TAR" not in err.value.message  # the status line is ours
    digest = hashlib.sha256(b"x").hexdigest()
    changed = ToFile(0, f"tar: ./a: file changed as we read it\nAIF-TAR rc=1 {digest}\n", 1, digest)
    assert check_tar(changed, "w", "local") is False
    # a job dir that is not there: nothing is packed from anywhere else, and it is an error
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "a").write_bytes(b"not the job's")
    gone = LocalTransport().run_to_file(
        f"cd {tmp_path / 'home'} && " + tar_command(str(tmp_path / "nowhere")), tmp_path / "g.tar", stdin=b"a\0"
    )
    assert gone.written == 0 and "AIF-TAR" not in gone.stderr
    with pytest.raises(RemoteError, match="No such file"):
        check_tar(gone, "nowhere", "local")
    # no status line: a command that failed before tar ended is an error, else nothing is settled
    with pytest.raises(RemoteError, match="cd: w: No such file"):
        check_tar(ToFile(1, "bash: cd: w: No such file or directory\n", 0, None), "w", "local")
    assert check_tar(ToFile(0, "", 0, digest), "w", "local") is False
