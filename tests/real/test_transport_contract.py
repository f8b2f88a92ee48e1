"""One contract suite, run over every transport: `local` (this machine) and `ssh` (paramiko to
the test bed's sshd). The backends rely on exactly these behaviours."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from aifactory_cli.transport import and_then
from aifactory_cli.transport.local import LocalTransport

pytestmark = pytest.mark.real


@pytest.fixture(params=["local", "ssh"])
def transport(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "local":
        t = LocalTransport()
        base = tmp_path / "remote"
        base.mkdir()
    else:
        from aifactory_cli.transport.ssh import SshTransport

        settings = request.getfixturevalue("testbed_ssh_settings")
        t = SshTransport(settings, site="testbed")
        base = Path(t.run(["mktemp", "-d", "/tmp/aif-contract.XXXXXX"]).stdout.strip())
    yield t, str(base)
    t.run(["rm", "-rf", "--", str(base)])
    t.close()


def test_run_quotes_argv_and_returns_exact_output(transport) -> None:
    t, _ = transport
    r = t.run(["printf", "%s|", "a b", "$(id)", "'q'", "\n"])
    assert (r.rc, r.stdout, r.stderr) == (0, "a b|$(id)|'q'|\n|", "")
    assert t.run("exit 7").rc == 7
    r = t.run("echo out; echo err >&2")
    assert (r.stdout, r.stderr) == ("out\n", "err\n")
    assert t.run("true").stdout == ""


def test_stdin_bytes_and_streams(transport) -> None:
    t, _ = transport
    assert t.run(["wc", "-c"], stdin=b"x" * 100_000).stdout.strip() == "100000"

    def writer(sink) -> None:
        for _ in range(50):
            sink.write(b"y" * 65536)

    assert t.run(["wc", "-c"], stdin=writer).stdout.strip() == str(50 * 65536)


def test_files_put_read_offset(transport) -> None:
    t, base = transport
    path = f"{base}/f.txt"
    t.put_bytes(b"hello world", path, 0o600)
    assert t.read_bytes(path) == b"hello world"
    assert t.read_bytes(path, 6) == b"world"
    assert t.run(["stat", "-c", "%a", path]).stdout.strip() == "600"
    with pytest.raises(FileNotFoundError):
        t.read_bytes(f"{base}/missing")


def test_get_file_and_tar(transport, tmp_path: Path) -> None:
    t, base = transport
    assert t.run(
        and_then(
            ["mkdir", "-p", f"{base}/d/sub"], ["sh", "-c", f"echo a > {base}/d/a.txt; echo b > {base}/d/sub/b.txt"]
        )
    ).ok
    got = tmp_path / "copy.txt"
    t.get_file(f"{base}/d/a.txt", got)
    assert got.read_text() == "a\n"
    seen: list[int] = []
    archive = tmp_path / "x.tar"
    t.get_tar(f"{base}/d", ["a.txt", "sub/b.txt"], archive, seen.append)
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["a.txt", "sub/b.txt"]
    assert sum(seen) > 0
