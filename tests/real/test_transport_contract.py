"""One contract suite, run over every transport: `local` (this machine), `ssh` (paramiko to the test
bed's sshd, in this process) and `agent` (the same through a connection agent process). The
backends rely on exactly these behaviours: the `Transport` protocol in aifactory_cli.transport."""

from __future__ import annotations

import getpass
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aifactory_cli.transport import Transport, and_then
from aifactory_cli.transport.local import LocalTransport
from tests.real.conftest import TESTBED_USER

pytestmark = pytest.mark.real


@pytest.fixture(params=["local", "ssh", "agent"])
def transport(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Transport, str, str]]:
    t: Any
    if request.param == "local":
        t = LocalTransport()
        base = tmp_path / "remote"
        base.mkdir()
        user = getpass.getuser()
    else:
        from aifactory_cli.transport.agent.client import AgentTransport, make_transport

        settings = request.getfixturevalue("testbed_ssh_settings")
        monkeypatch.setenv("AIFACTORY_HOME", str(tmp_path / "home"))  # this test's own agent
        t = make_transport(settings, site="testbed", interactive=False, persist=30 if request.param == "agent" else 0)
        assert isinstance(t, AgentTransport) == (request.param == "agent")
        base = Path(t.run(["mktemp", "-d", "/tmp/aif-contract.XXXXXX"]).stdout.strip())
        user = TESTBED_USER
    yield t, str(base), user
    t.run(["rm", "-rf", "--", str(base)])
    t.close()
    if request.param == "agent":
        t.shutdown_agent()
        for proc in t._procs:
            proc.wait(10)


def test_connect_and_username(transport: tuple[Transport, str, str]) -> None:
    t, _, user = transport
    t.connect()
    t.connect()  # idempotent
    assert t.username == user
    assert t.run(["id", "-un"]).stdout.strip() == user


def test_run_quotes_argv_and_returns_exact_output(transport: tuple[Transport, str, str]) -> None:
    t, _, _ = transport
    r = t.run(["printf", "%s|", "a b", "$(id)", "'q'", "\n"])
    assert (r.rc, r.stdout, r.stderr) == (0, "a b|$(id)|'q'|\n|", "")
    assert t.run("exit 7").rc == 7
    r = t.run("echo out; echo err >&2")
    assert (r.stdout, r.stderr) == ("out\n", "err\n")
    r = t.run("true")
    assert (r.stdout, r.noise_bytes) == ("", 0)  # quiet shells here; noisy ones: test_ssh_transport/test_agent


def test_stdin_bytes_and_streams(transport: tuple[Transport, str, str]) -> None:
    t, _, _ = transport
    assert t.run(["wc", "-c"], stdin=b"x" * 100_000).stdout.strip() == "100000"

    def writer(sink: Any) -> None:
        for _ in range(50):
            sink.write(b"y" * 65536)

    assert t.run(["wc", "-c"], stdin=writer).stdout.strip() == str(50 * 65536)


def test_read_bytes_offset_and_missing(transport: tuple[Transport, str, str]) -> None:
    t, base, _ = transport
    path = f"{base}/f.txt"
    assert t.run(["sh", "-c", 'cat > "$1"', "sh", path], stdin=b"hello world").ok
    assert t.read_bytes(path) == b"hello world"
    assert t.read_bytes(path, 6) == b"world"
    assert t.read_bytes(path, 11) == b""
    with pytest.raises(FileNotFoundError):
        t.read_bytes(f"{base}/missing")


def test_get_tar(transport: tuple[Transport, str, str], tmp_path: Path) -> None:
    t, base, _ = transport
    assert t.run(
        and_then(
            ["mkdir", "-p", f"{base}/d/sub"], ["sh", "-c", f"echo a > {base}/d/a.txt; echo b > {base}/d/sub/b.txt"]
        )
    ).ok
    seen: list[int] = []
    archive = tmp_path / "out" / "x.tar"
    t.get_tar(f"{base}/d", ["a.txt", "sub/b.txt"], archive, seen.append)
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["a.txt", "sub/b.txt"]
        member = tar.extractfile("sub/b.txt")
        assert member is not None and member.read() == b"b\n"
    assert sum(seen) > 0


def test_get_tar_of_more_names_than_one_command_line_holds(
    transport: tuple[Transport, str, str], tmp_path: Path
) -> None:
    """5,000 names of 50 characters: 250 KB, past the 128 KiB that Linux allows the one argument of
    sshd's `bash -c` (the names go on tar's stdin); a name that starts with `-` is no option."""
    t, base, _ = transport
    names = [f"-n{i:05d}-" + "x" * 42 for i in range(5000)]
    assert t.run(
        [
            "sh",
            "-c",
            f'mkdir -p {base}/many && cd {base}/many && for i in $(seq -w 0 4999); do : > "./-n0$i-{"x" * 42}"; done',
        ]
    ).ok
    archive = tmp_path / "many.tar"
    t.get_tar(f"{base}/many", names, archive)
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == names


def test_a_local_file_as_stdin_from_an_offset(transport: tuple[Transport, str, str], tmp_path: Path) -> None:
    """`LocalFile` stdin (a large upload; over the agent, the agent reads the file): the bytes from
    the offset on, counted as they go."""
    import hashlib

    from aifactory_cli.transport import LocalFile

    t, _, _ = transport
    body = os.urandom(3_000_000)
    (tmp_path / "up.bin").write_bytes(body)
    seen: list[int] = []
    r = t.run("sha256sum", stdin=LocalFile(tmp_path / "up.bin", 1000, seen.append))
    assert r.ok and r.stdout.split()[0] == hashlib.sha256(body[1000:]).hexdigest()
    assert sum(seen) == len(body) - 1000


def test_a_local_tar_as_stdin_unpacks_there_with_its_hard_links(
    transport: tuple[Transport, str, str], tmp_path: Path
) -> None:
    """`LocalTar` stdin (the data store's small files and tree links; over the agent, the agent reads
    the files): GNU tar on the other side makes the files and the hard links."""
    from aifactory_cli.transport.tarstream import LocalTar

    t, _, _ = transport
    (tmp_path / "one").write_bytes(os.urandom(5000))
    seen: list[int] = []
    listing = LocalTar.file_record("d/one", str(tmp_path / "one"), 5000, 0o400, 1)
    tar = LocalTar(listing + LocalTar.link_record("tree/deep/one", "d/one", 1), seen.append)
    r = t.run(
        'x=$(mktemp -d) && cd "$x" && tar -x -f - && stat -c "%h %s %n" d/one tree/deep/one; rm -rf "$x"', stdin=tar
    )
    assert r.ok, r.stderr
    assert r.stdout.split("\n")[:2] == ["2 5000 d/one", "2 5000 tree/deep/one"]
    assert sum(seen) == 5000


def test_run_to_file_writes_appends_and_hashes_the_whole_file(
    transport: tuple[Transport, str, str], tmp_path: Path
) -> None:
    """A command's stdout straight into a local file (over the agent the agent writes it): appended
    after what is there, with the sha256 of the whole file; exit code and stderr as the command's."""
    import errno
    import hashlib

    t, base, _ = transport
    body = os.urandom(3_000_000)
    src = tmp_path / "src.bin"
    src.write_bytes(body)
    assert t.run(["mkdir", "-p", f"{base}/tf"], stdin=None).ok
    assert t.run(["sh", "-c", f"cat > {base}/tf/big.bin"], stdin=body).ok
    part = tmp_path / "got" / "big.part"
    part.parent.mkdir()
    part.write_bytes(body[:1000])  # an earlier, cut copy
    seen: list[int] = []
    done = t.run_to_file(f"tail -c +1001 {base}/tf/big.bin", part, append=True, digest=True, progress=seen.append)
    assert (done.rc, done.written, sum(seen)) == (0, len(body) - 1000, len(body) - 1000)
    assert part.read_bytes() == body and done.sha256 == hashlib.sha256(body).hexdigest()
    bad = t.run_to_file("echo out; echo oops >&2; exit 3", tmp_path / "bad.out")
    assert (bad.rc, bad.stderr.strip(), bad.sha256) == (3, "oops", None)
    assert (tmp_path / "bad.out").read_text() == "out\n"
    with pytest.raises(OSError) as full:  # this machine's full disk: its own OSError, not the site's
        t.run_to_file(f"cat {base}/tf/big.bin", Path("/dev/full"))
    assert full.value.errno == errno.ENOSPC
    assert t.run(["echo", "ok"]).stdout == "ok\n"  # the connection is fine after it


def test_open_tunnel_carries_bytes_both_ways_and_a_refusal_is_tunnel_refused(
    transport: tuple[Transport, str, str],
) -> None:
    """A port as the site reaches it (`aifactory forward`): an echo server on this machine, which is
    also the test bed's login node (127.0.0.1): bytes both ways, a half-close passed on, no login."""
    import socket
    import threading

    from aifactory_cli.errors import TunnelRefused

    t, _, _ = transport
    t.connect()
    logins = getattr(t, "connections_opened", 0)
    with socket.create_server(("127.0.0.1", 0)) as server:

        def echo() -> None:
            conn, _ = server.accept()
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                conn.sendall(b"echo:" + data)

        thread = threading.Thread(target=echo, daemon=True)
        thread.start()
        tunnel = t.open_tunnel("127.0.0.1", server.getsockname()[1])
        payload = bytes(range(256)) * 4096  # 1 MiB
        tunnel.sendall(payload)
        tunnel.shutdown_write()
        reply = b""
        while chunk := tunnel.recv(65536):
            reply += chunk
        tunnel.close()
        thread.join(10)
    assert reply == b"echo:" + payload
    with socket.socket() as bound:  # bound, not listening: refused
        bound.bind(("127.0.0.1", 0))
        with pytest.raises(TunnelRefused, match=f"127.0.0.1:{bound.getsockname()[1]}"):
            t.open_tunnel("127.0.0.1", bound.getsockname()[1])
    assert getattr(t, "connections_opened", 0) == logins  # the existing connection, no new login
    assert t.run("echo still").stdout == "still\n"
