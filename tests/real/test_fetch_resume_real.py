"""A fetch cut midway on the test bed (a TCP proxy drops the SSH connection at about half of a
192 MiB file) is exit 3 that says what is kept; the next fetch asks the site only for the rest, and
the file is checked against the site's sha256."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.real.bedjobs import aif, bed_env
from tests.real.conftest import TESTBED_ACCOUNT, TESTBED_CLIENT
from tests.real.faultproxy import FaultProxy

pytestmark = pytest.mark.real

SIZE = 192 * 1024 * 1024  # over fetching.LARGE: fetched on its own, resumable


def test_a_cut_fetch_is_exit_3_and_the_next_fetch_resumes_inside_the_file(tmp_path: Path) -> None:
    env = bed_env(tmp_path)
    env["AIFACTORY_ACCOUNT"] = TESTBED_ACCOUNT
    # aifactory's own connection (the agent appends to the partial copy): a cut upload through an
    # OpenSSH master of aifactory's own is tests/real/test_data_real.py's
    env["AIFACTORY_OPENSSH_MUX"] = "0"
    proxy = FaultProxy(("127.0.0.1", 2222))
    try:
        pin = (TESTBED_CLIENT / "host_fingerprint").read_text().strip()
        (tmp_path / "known_hosts").write_text("")
        profiles = tmp_path / "profiles"
        profiles.mkdir()
        (profiles / "fetchcut.yaml").write_text(
            f"extends: lumi-bed\nssh: {{port: {proxy.port}, known_hosts: {tmp_path / 'known_hosts'}, "
            f"host_key_fingerprints: ['{pin}']}}\n"
        )
        env["AIFACTORY_PROFILES"] = f"{profiles}:{env['AIFACTORY_PROFILES']}"
        spec = tmp_path / "job.yaml"
        spec.write_text(
            f"name: bigout\nresources: {{time: 5m}}\nrun: head -c {SIZE} /dev/urandom > out.bin; echo small > s.txt\n"
            "download: [out.bin, s.txt]\n"
        )
        r = aif(["submit", str(spec), "--site", "fetchcut", "--wait", "--json"], env, tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr
        job = json.loads(r.stdout)["jobs"][0]
        site_sum = hashlib.sha256((Path(job["workdir"]) / "out.bin").read_bytes()).hexdigest()  # the bed is here
        dest = tmp_path / "got"
        proc = subprocess.Popen(
            [sys.executable, "-m", "aifactory_cli", "fetch", job["id"], "--dest", str(dest)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        while time.time() < deadline:  # cut at about half of the file
            if any(p.stat().st_size > SIZE // 2 for p in dest.glob(".aif-partial/*.part") if p.exists()):
                break
            time.sleep(0.005)
        else:
            proc.kill()
            pytest.fail(f"the fetch never reached half: {proc.communicate()}")
        proxy.cut()
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 3, err
        assert "Traceback" not in err and "internal error" not in err
        assert "kept in" in err and ".aif-partial for the next fetch to resume: out.bin (" in err, err
        (part,) = dest.glob(".aif-partial/*.part")
        kept = part.stat().st_size
        assert 0 < kept < SIZE and not (dest / "out.bin").exists()
        again = aif(["fetch", job["id"], "--dest", str(dest), "--json"], env, tmp_path, timeout=300)
        assert again.returncode == 0, again.stderr
        done = json.loads(again.stdout)
        assert (done["resumed_bytes"], done["checked"]) == (kept, 2), done
        assert done["bytes"] <= SIZE - kept + 20_000  # the rest, and s.txt in a tar
        got = hashlib.sha256()
        with open(dest / "out.bin", "rb") as fh:
            while chunk := fh.read(1 << 20):
                got.update(chunk)
        assert got.hexdigest() == site_sum
        assert sorted(p.name for p in dest.iterdir()) == ["out.bin", "s.txt"]  # the partial dir is gone
        aif(["cancel", job["id"]], env, tmp_path, timeout=60)
        subprocess.run(["rm", "-rf", job["workdir"]], check=False)
    finally:
        proxy.close()
