"""Consecutive large transfers over one SshTransport to the test bed (tests/testbed/start.sh must be
up), with the longest gap between progress callbacks of each: a fetch (what `aifactory fetch` does for
a large file: `run_to_file` of `fetching.large_command`, the site hashing it meanwhile, then the
sha256 compared) and a `data:` upload (`DataStore.send`, the site's sha256 check included) of a
--size MiB file, --runs times each;
and, for comparison, a bare paramiko `exec_command("cat FILE")` (paramiko's own rekeying).

Both take the path `aifactory fetch` and `submit` take (`mux.bulk_transport`): for 64 MiB or more, an
OpenSSH master of aifactory's own (transport/ssh/ownmaster.py), started once and used by every run,
as one command moving many large files would; `--paramiko`: aifactory's own connection only
(AIFACTORY_OPENSSH_MUX=0). Each line says which.

    python3 bench/gaps.py [--size 1024] [--runs 10] [--bare] [--paramiko]
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import tempfile
import time
from pathlib import Path

from aifactory_cli.backends.datastore import DataStore
from aifactory_cli.backends.fetching import large_command
from aifactory_cli.jobs import datastore as ds
from aifactory_cli.sites.profile import SshSettings
from aifactory_cli.transport.ssh.connection import SshTransport
from aifactory_cli.transport.ssh.mux import bulk_transport, bulk_via

CLIENT = Path("/tmp/testbed/client")
BASE = "/scratch/project_465000001/hpcuser"
SETTINGS = SshSettings(
    host="127.0.0.1",
    port=2222,
    user="hpcuser",
    identity_file=str(CLIENT / "id_ed25519"),
    known_hosts=str(CLIENT / "known_hosts"),
    connect_timeout=10,
)


def gaps(stamps: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(stamps)), default=0.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024, help="MiB")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--bare", action="store_true", help="also a bare paramiko exec 'cat' (may stall/fail)")
    ap.add_argument("--paramiko", action="store_true", help="no OpenSSH master: aifactory's own connection only")
    args = ap.parse_args()
    os.environ["AIFACTORY_SSH_CONFIG"] = "/dev/null"
    if args.paramiko:
        os.environ["AIFACTORY_OPENSSH_MUX"] = "0"
    size = args.size * 1024 * 1024
    wd, store = f"{BASE}/bench-gaps", f"{BASE}/bench-gaps-store"
    with (
        tempfile.TemporaryDirectory(dir="/var/tmp") as tmp,
        SshTransport(SETTINGS, site="bed", interactive=False) as ssh,
    ):
        work = Path(tmp)
        assert ssh.run(f"mkdir -p {wd} && head -c {size} /dev/urandom > {wd}/big.bin").ok
        bulk = bulk_transport(ssh, size)  # as `aifactory fetch` takes it
        print(f"fetch via {bulk_via(bulk) or 'paramiko (aifactory own connection)'}", flush=True)
        for i in range(args.runs):
            st: list[float] = []
            t0 = time.monotonic()
            done = bulk.run_to_file(
                large_command(f"{wd}/big.bin", 0),
                work / "f.bin",
                digest=True,
                progress=lambda n, st=st: st.append(time.monotonic()),
            )
            site = done.stderr.split("SHA256 ", 1)[1].split()[0] if "SHA256 " in done.stderr else "?"
            ok = (
                "sha256 matches" if done.rc == 0 and site == done.sha256 else f"FAILED rc {done.rc} {done.stderr[:200]}"
            )
            print(f"fetch {i + 1}: {time.monotonic() - t0:.1f} s, longest gap {gaps(st):.2f} s, {ok}", flush=True)
            (work / "f.bin").unlink()
        src = work / "up.bin"
        subprocess.run(["head", "-c", str(size), "/dev/urandom"], stdout=src.open("wb"), check=True)
        files = ds.hash_files([(src, "big.bin")], ds.HashCache(work / "hashes.json"))
        up = DataStore(ssh, "bed")
        print(f"upload via {bulk_via(bulk_transport(ssh, size)) or 'paramiko (aifactory own connection)'}", flush=True)
        for i in range(args.runs):
            ssh.run(["rm", "-rf", store])
            st = []
            t0 = time.monotonic()
            up.send(
                store, files, up.probe(store, [files[0].sha256]), f"g{i}", lambda n, st=st: st.append(time.monotonic())
            )
            dt = time.monotonic() - t0
            print(
                f"upload {i + 1}: {dt:.1f} s, longest gap {gaps(st):.2f} s, "
                f"last byte -> stored (site sha256sum) {t0 + dt - st[-1]:.1f} s",
                flush=True,
            )
        if args.bare:
            import paramiko

            c = paramiko.SSHClient()
            c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            c.connect(
                "127.0.0.1",
                2222,
                "hpcuser",
                key_filename=str(CLIENT / "id_ed25519"),
                look_for_keys=False,
                allow_agent=False,
            )
            for i in range(2):
                st = []
                t0 = time.monotonic()
                try:
                    _, out, _ = c.exec_command(f"cat {wd}/big.bin")
                    while out.channel.recv(1 << 20):
                        st.append(time.monotonic())
                    print(f"bare paramiko cat {i + 1}: {time.monotonic() - t0:.1f} s, longest gap {gaps(st):.2f} s")
                except paramiko.SSHException as exc:
                    print(f"bare paramiko cat {i + 1}: failed after {time.monotonic() - t0:.1f} s: {exc}")
                    break
            c.close()
        ssh.run(["rm", "-rf", wd, store])


if __name__ == "__main__":
    main()
