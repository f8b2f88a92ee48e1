"""`aifactory fetch` onto a disk too small for it, on the test bed (tests/testbed/start.sh must be up): a
job writes --size MiB (default 64) into out.bin (`download: [out.bin]`); a tmpfs of --tmpfs MiB (default
16) is mounted on a temporary directory (needs root), with an older results/out.bin in it; the fetch
into results/ fills it. Prints the exit code, the message, whether the older out.bin is untouched and
what is left in the tmpfs afterwards (`find`), then unmounts it.

    python3 bench/fullfetch.py [--size 64] [--tmpfs 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import AIF, CLIENT, aif_env, drop_all

OLD = b"the out.bin of an earlier fetch\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64, help="MiB the job writes")
    ap.add_argument("--tmpfs", type=int, default=16, help="MiB of the tmpfs fetched into")
    args = ap.parse_args()
    if not (CLIENT / "id_ed25519").exists():
        raise SystemExit("the test bed is not up: bash tests/testbed/start.sh")
    if os.geteuid() != 0:
        raise SystemExit("mounting a tmpfs needs root")
    size = args.size * 1024 * 1024
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        work = Path(tmp)
        env = aif_env(work / "home")
        spec = work / "out.yaml"
        spec.write_text(
            f"name: ff\nrun: head -c {size} /dev/urandom > out.bin\nresources: {{time: 30m}}\ndownload: [out.bin]\n"
        )
        mnt = Path(tempfile.mkdtemp(prefix="aif-fullfetch-"))
        mounted = False
        try:
            r = subprocess.run([*AIF, "submit", str(spec), "--site", "benchdata", "--wait", "--json"], env=env,
                               capture_output=True, text=True)  # fmt: skip
            if r.returncode != 0:
                raise SystemExit(f"the job: exit {r.returncode}: {r.stderr[-2000:]}")
            job = json.loads(r.stdout)["jobs"][0]
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.tmpfs}m", "tmpfs", str(mnt)], check=True)
            mounted = True
            dest = mnt / "results"
            dest.mkdir()
            (dest / "out.bin").write_bytes(OLD)
            t0 = time.perf_counter()
            f = subprocess.run([*AIF, "fetch", job["id"], "--dest", str(dest)], env=env, capture_output=True,
                               text=True, timeout=600)  # fmt: skip
            dt = time.perf_counter() - t0
            old = (dest / "out.bin").read_bytes() if (dest / "out.bin").is_file() else None
            left = subprocess.run(["find", str(mnt), "-printf", "%M %10s  %P\\n"], capture_output=True, text=True)
            df = subprocess.run(["df", "-B1", "--output=used,size", str(mnt)], capture_output=True, text=True)
        finally:
            if mounted:
                subprocess.run(["umount", str(mnt)], check=False)
            mnt.rmdir()
            drop_all(env)  # cancels nothing here (the job ended), removes its job dir
    used, total = (int(x) for x in df.stdout.split()[-2:])
    if old == OLD:
        previous = f"untouched ({len(OLD)} bytes, the same content)"
    else:
        previous = "missing" if old is None else f"CHANGED ({len(old):,} bytes)"
    lines = [
        f"Date: {when}; `python3 bench/fullfetch.py --size {args.size} --tmpfs {args.tmpfs}`; loopback, one sshd.",
        "",
        "| what | figure |",
        "|---|---|",
        f"| the job's out.bin | {args.size:,} MiB ({size:,} bytes) |",
        f"| fetched into | a {args.tmpfs} MiB tmpfs, results/ holding an older out.bin |",
        f"| the fetch (aifactory fetch JOB --dest results; not in backticks: docs commands are run) | exit {f.returncode} after {dt:.1f} s |",
        f"| the older results/out.bin | {previous} |",
        f"| tmpfs used afterwards (df) | {used:,} of {total:,} bytes |",
        "",
        "Its message (stderr; stdout is empty unless it says otherwise):",
        "",
        "```",
        f.stderr.strip(),
        *([f"stdout: {f.stdout.strip()}"] if f.stdout.strip() else []),
        "```",
        "",
        "Left in the tmpfs afterwards (`find MOUNT -printf '%M %10s  %P\\n'`, the mount point itself first):",
        "",
        "```",
        left.stdout.rstrip(),
        "```",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
