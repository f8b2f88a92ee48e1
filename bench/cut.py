"""A `data:` upload cut in the middle and resumed, on the test bed (tests/testbed/start.sh must be up): a
--size MiB file (default 10240) goes to a spec's `data:` store through a TCP proxy (tests/real/faultproxy.py,
which counts the bytes each way) that drops every connection once the site's
partial copy passes --at percent (default 50); the next submit, through the same proxy, resumes at the
size of that partial copy, and its job prints the sha256 of the file it reads.

Prints the cut attempt's exit code and message, what each attempt sent (aifactory's own count and the
proxy's, client to site), and whether the job read, and the store holds, the sha256 computed here. Needs
about twice --size free (the file here and its copy on the site, the same disk on the bed).

    python3 bench/cut.py [--size 10240] [--at 50]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import AIF, CLIENT, REPO, SCRATCH, aif_env, drop_all, rm_site

sys.path.insert(0, str(REPO))
from tests.real.faultproxy import FaultProxy

STORE = f"{SCRATCH}/aif-bench-cut"


def parts() -> list[Path]:
    """The large files on their way into the store (the site is this machine)."""
    return list(Path(STORE, "tmp").glob("*.part"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=10240, help="MiB")
    ap.add_argument("--at", type=float, default=50, help="cut when the site's partial copy passes this percent")
    args = ap.parse_args()
    if not (CLIENT / "id_ed25519").exists():
        raise SystemExit("the test bed is not up: bash tests/testbed/start.sh")
    size = args.size * 1024 * 1024
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rm_site(STORE)
    proxy = FaultProxy(("127.0.0.1", 2222))
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        work = Path(tmp)
        env = aif_env(work / "home", store=STORE)
        pin = (CLIENT / "host_fingerprint").read_text().strip()
        (work / "known_hosts").write_text("")
        (work / "home" / "profiles" / "benchcut.yaml").write_text(
            f"extends: benchdata\nssh: {{port: {proxy.port}, known_hosts: {work / 'known_hosts'}, "
            f"host_key_fingerprints: ['{pin}']}}\n"
        )
        (work / "ds").mkdir()
        digest = hashlib.sha256()
        with (work / "ds" / "big.bin").open("wb") as f:
            for left in range(size, 0, -(1 << 20)):
                chunk = os.urandom(min(left, 1 << 20))
                digest.update(chunk)
                f.write(chunk)
        local = digest.hexdigest()
        spec = work / "job.yaml"
        spec.write_text("name: cut\nrun: sha256sum ds/big.bin\nresources: {time: 30m}\ndata: [ds]\n")
        submit = [*AIF, "submit", str(spec), "--site", "benchcut"]
        try:
            t0 = time.perf_counter()
            proc = subprocess.Popen(submit, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip
            at = size * args.at / 100
            while proc.poll() is None:
                if any(p.stat().st_size > at for p in parts() if p.exists()):
                    break
                time.sleep(0.01)
            else:
                raise SystemExit(f"the upload never reached {args.at} %: exit {proc.returncode}: {proc.communicate()}")
            proxy.cut()
            _, err1 = proc.communicate(timeout=600)
            t1 = time.perf_counter() - t0
            wire1 = proxy.up
            kept = sum(p.stat().st_size for p in parts())
            t0 = time.perf_counter()
            r = subprocess.run([*submit, "--wait", "--json"], env=env, capture_output=True, text=True)
            t2 = time.perf_counter() - t0
            wire2 = proxy.up - wire1
            if r.returncode != 0:
                raise SystemExit(f"the resuming submit: exit {r.returncode}: {r.stderr[-2000:]}")
            job = json.loads(r.stdout)["jobs"][0]
            read = (Path(job["workdir"]) / "stdout.log").read_text().split()
            stored = Path(STORE, "sha256", local[:2], local)
            stored_sum = subprocess.run(["sha256sum", str(stored)], capture_output=True, text=True).stdout.split()
        finally:
            proxy.close()
            drop_all(env)
            rm_site(STORE)
    sent1 = re.search(r"([\d,]+) bytes sent", err1)
    payload1 = int(sent1[1].replace(",", "")) if sent1 else None
    sent2 = re.search(r"data: .*? sent \(([\d.]+) MB(, \d+ resumed)?\)", r.stderr)
    payload2 = round(float(sent2[1]) * 1e6) if sent2 else None
    payload = (
        f"{payload1 + payload2:,} bytes ({(payload1 + payload2) / size:.3f}x the file)" if sent1 and sent2 else "?"
    )
    ok = bool(read) and read[0] == local and bool(stored_sum) and stored_sum[0] == local
    data_line = next((ln for ln in r.stderr.splitlines() if ln.startswith("data:")), r.stderr.strip())
    lines = [
        f"Date: {when}; `python3 bench/cut.py --size {args.size} --at {args.at:g}`; one run; loopback, one sshd, "
        "through a Python TCP proxy that drops every connection.",
        "",
        "| what | figure |",
        "|---|---|",
        f"| file | {args.size:,} MiB ({size:,} bytes) |",
        f"| cut attempt | exit {proc.returncode} after {t1:.1f} s (cut when the site's partial copy passed "
        f"{args.at:g} %) |",
        f"| kept on the site in part | {kept:,} bytes ({kept / size * 100:.1f} %) |",
        f"| resume (submit --wait, the job's sha256sum included) | exit {r.returncode} in {t2:.1f} s: `{data_line}` |",
        f"| payload sent by aifactory, cut + resume | {payload1 or 0:,} + {payload2 or 0:,} bytes = {payload} "
        f"(the resume's count is in 0.1 MB; the file less its kept part: {size - kept:,} bytes) |",
        f"| on the wire, client to site (proxy), cut + resume | {wire1:,} + {wire2:,} bytes = {wire1 + wire2:,} bytes "
        f"({(wire1 + wire2) / size:.3f}x the file) |",
        f"| sha256 here | `{local}` |",
        f"| sha256 the job read (`sha256sum ds/big.bin`) | `{read[0] if read else '?'}` |",
        f"| sha256 of the stored file (sha256/{local[:2]}/{local[:12]}…) | `{stored_sum[0] if stored_sum else '?'}` |",
        f"| all three equal | {'yes' if ok else 'NO'} |",
        "",
        "The cut attempt's message (stderr):",
        "",
        "```",
        err1.strip(),
        "```",
    ]
    print("\n".join(lines))
    if proc.returncode != 3 or not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
