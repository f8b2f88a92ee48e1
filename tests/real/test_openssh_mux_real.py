"""The OpenSSH fast path (transport/ssh/mux.py) on the test bed: with the user's own ControlMaster
open (ControlMaster auto + ControlPath in ssh_config, started here by `ssh -MNf` as a user's login
would), a spec's large `data:` file goes up and a large output comes back through it: the CLI says
so, the sha256 match, and the server saw no login for them (its LogLevel VERBOSE log counts TCP
connections: the master's, and aifactory's own one per command, as without the master). With the
master stopped, the same works through paramiko and nothing mentions a master.

The server is an sshd of the test's own (tests/real/own_sshd.py) in front of the bed's Slurm, so that
its log counts only this test's logins."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.real.bedjobs import bed_env, data_round
from tests.real.conftest import TESTBED_ACCOUNT, TESTBED_KEY, TESTBED_USER
from tests.real.own_sshd import own_sshd

pytestmark = pytest.mark.real

SCRATCH = Path(f"/scratch/{TESTBED_ACCOUNT}/{TESTBED_USER}")
UP = 9 * 1024 * 1024  # over the store's LARGE (8 MiB): sent on its own
DOWN = 66 * 1024 * 1024  # over fetch's LARGE (64 MiB): fetched on its own


def test_large_data_and_fetch_go_through_the_users_controlmaster_else_paramiko(tmp_path: Path) -> None:
    store = SCRATCH / f"aif-mux-test-{secrets.token_hex(4)}"
    sockets = Path(tempfile.mkdtemp(prefix="aifcm-", dir="/tmp"))  # a socket path must stay short
    with own_sshd(tmp_path / "sshd", "AuthorizedKeysFile .ssh/authorized_keys\n") as server:
        cfg = tmp_path / "ssh_config"
        cfg.write_text(
            server.ssh_config(
                "muxbed",
                TESTBED_KEY,
                f"    ControlMaster auto\n    ControlPath {sockets}/cm-%C\n    ControlPersist 60\n",
            )
        )
        ssh = ["ssh", "-F", str(cfg)]
        env = bed_env(tmp_path)
        env.update(AIFACTORY_ACCOUNT=TESTBED_ACCOUNT, AIFACTORY_SSH_CONFIG=str(cfg))
        profiles = tmp_path / "profiles"
        profiles.mkdir()
        (profiles / "muxb.yaml").write_text(
            f"extends: lumi-bed\ndata_dir: {store}\nssh: {{host: muxbed, known_hosts: {server.known_hosts}}}\n"
        )
        env["AIFACTORY_PROFILES"] = f"{profiles}{os.pathsep}{env['AIFACTORY_PROFILES']}"
        try:
            subprocess.run([*ssh, "-MNf", "muxbed"], check=True, stdin=subprocess.DEVNULL, timeout=30)
            assert subprocess.run([*ssh, "-O", "check", "muxbed"], capture_output=True).returncode == 0
            (path,) = sockets.iterdir()
            assert server.connections() == 1  # the master's login

            # 1. through the master
            stderr, _, fetched = data_round(env, tmp_path, "a", "muxb", UP, DOWN)
            via = f"via the OpenSSH ControlMaster at {path}"
            assert f"; {via}" in stderr, stderr  # the data: line
            assert fetched["via"] == f"the OpenSSH ControlMaster at {path}", fetched
            with_master = server.connections() - 1
            assert subprocess.run([*ssh, "-O", "check", "muxbed"], capture_output=True).returncode == 0

            # 2. the master stopped: the 9 MiB upload over paramiko; the 66 MiB fetch (over ownmaster.py's
            # 64 MiB) through a master of aifactory's own, one login more; nothing mentions the user's
            subprocess.run([*ssh, "-O", "exit", "muxbed"], capture_output=True, timeout=30)
            assert subprocess.run([*ssh, "-O", "check", "muxbed"], capture_output=True).returncode != 0
            before = server.connections()
            stderr, _, fetched = data_round(env, tmp_path, "b", "muxb", UP, DOWN)
            assert "OpenSSH" not in stderr, stderr
            assert fetched["via"].startswith("an OpenSSH master of aifactory's own"), fetched
            without_master = server.connections() - before
            print(f"\nlogins: {with_master} with the master (besides its own), {without_master} without")
            # the transfers through the user's master added no login: aifactory's own per command, as
            # without it, plus the fetch's own master there
            assert with_master + 1 == without_master, server.log.read_text()[-3000:]
        finally:
            with contextlib.suppress(subprocess.SubprocessError):
                subprocess.run([*ssh, "-O", "exit", "muxbed"], capture_output=True, timeout=30)
            shutil.rmtree(sockets, ignore_errors=True)
            subprocess.run(["chmod", "-R", "u+w", str(store)], check=False, capture_output=True)
            shutil.rmtree(store, ignore_errors=True)
