"""Large data on the test bed (tests/testbed/start.sh must be up), side by side in one run, over the
same sshd: a 1 GiB file (or --size MiB) sent into a spec's `data:` store and fetched back with
`aifactory fetch`, against `scp` and `rsync` of the same file; then a job whose data is already on
the site, next to a job with no input. Medians of --runs runs; peak RSS of the aifactory process.

    python3 bench/data.py [--size 1024] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIENT = Path("/tmp/testbed/client")
SSH_CONFIG = CLIENT / "ssh_config"
ACCOUNT = "project_465000001"
SCRATCH = f"/scratch/{ACCOUNT}/hpcuser"
STORE = f"{SCRATCH}/aif-bench-data"
AIF = [sys.executable, "-m", "aifactory_cli"]
SSH = ["ssh", "-F", str(SSH_CONFIG), "testbed"]


def aif_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    (home / "ssh_config_empty").write_text("")
    profiles = home / "profiles"
    profiles.mkdir(exist_ok=True)
    (profiles / "benchdata.yaml").write_text(f"extends: lumi-bed\ndata_dir: {STORE}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIFACTORY_")}
    env.update(AIFACTORY_HOME=str(home), AIFACTORY_ACCOUNT=ACCOUNT, NO_COLOR="1",
               AIFACTORY_PROFILES=os.pathsep.join([str(profiles), str(REPO / "tests/profiles/bed"),
                                                   str(REPO / "tests/profiles")]),
               AIFACTORY_SSH_CONFIG=str(home / "ssh_config_empty"))
    return env


def run(cmd: list[str], env: dict[str, str] | None = None, setup=None) -> tuple[float, int, str]:
    """(seconds, peak RSS in KB of the command, its stderr), with GNU time around it."""
    if setup:
        setup()
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "RSS=%M", *cmd], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr[-2000:]}")
    rss = int(p.stderr.rsplit("RSS=", 1)[1].split()[0])
    return dt, rss, p.stderr


def sh(cmd: str) -> str:
    return subprocess.run([*SSH, cmd], capture_output=True, text=True, check=True).stdout


def row(name: str, results: list[tuple[float, int, str]], size: int, base: float | None) -> str:
    t = statistics.median(r[0] for r in results)
    rss = max(r[1] for r in results) / 1024
    ratio = f"{(size / t) / (size / base):.2f}x" if base else "1.00x"
    runs = ", ".join(f"{r[0]:.1f}" for r in results)
    return f"| {name} | {t:.2f} s ({runs}) | {size / t / 1e6:.0f} MB/s | {ratio} | {rss:.0f} MB |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024, help="MiB")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not (CLIENT / "id_ed25519").exists():
        raise SystemExit("the test bed is not up: bash tests/testbed/start.sh")
    size = args.size * 1024 * 1024
    lines = [f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.size} MiB; "
             f"medians of {args.runs} runs (each run listed); loopback, one sshd.", ""]
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        work = Path(tmp)
        env = aif_env(work / "home")
        src = work / "spec"
        (src / "ds").mkdir(parents=True)
        subprocess.run(["head", "-c", str(size), "/dev/urandom"], stdout=open(src / "ds" / "big.bin", "wb"),
                       check=True)
        spec = src / "job.yaml"
        spec.write_text("name: bd\nrun: 'true'\nresources: {time: 5m}\nslurm: {hold: true}\ndata: [ds]\n")
        nodata = src / "nodata.yaml"
        nodata.write_text("name: nd\nrun: 'true'\nresources: {time: 5m}\nslurm: {hold: true}\n")
        dest = f"{SCRATCH}/bench-up"

        def clean_remote() -> None:
            sh(f"rm -rf {dest} {STORE}; mkdir -p {dest}")

        # hashing is done once and cached (HashCache): measured apart from the transfer
        t0 = time.perf_counter()
        subprocess.run([*AIF, "submit", str(spec), "--site", "benchdata"], env=env, check=True, capture_output=True)
        first = time.perf_counter() - t0
        n = args.runs
        scp = [run(["scp", "-q", "-F", str(SSH_CONFIG), str(src / "ds" / "big.bin"), f"testbed:{dest}/"],
                   setup=clean_remote) for _ in range(n)]
        rsync = [run(["rsync", "-a", "-e", f"ssh -F {SSH_CONFIG}", str(src / "ds" / "big.bin"), f"testbed:{dest}/"],
                     setup=clean_remote) for _ in range(n)]
        aif = [run([*AIF, "submit", str(spec), "--site", "benchdata"], env=env, setup=clean_remote) for _ in range(n)]
        again = [run([*AIF, "submit", str(spec), "--site", "benchdata"], env=env) for _ in range(n)]
        none = [run([*AIF, "submit", str(nodata), "--site", "benchdata"], env=env) for _ in range(n)]
        du0 = int(sh(f"du -sb {SCRATCH}").split()[0])
        run([*AIF, "submit", str(spec), "--site", "benchdata"], env=env)
        du1 = int(sh(f"du -sb {SCRATCH}").split()[0])
        run([*AIF, "submit", str(nodata), "--site", "benchdata"], env=env)
        du2 = int(sh(f"du -sb {SCRATCH}").split()[0])
        sh("scancel --user=hpcuser --state=PENDING")
        base = statistics.median(r[0] for r in scp)
        lines += ["## Upload", "", "| how | median (runs) | rate | vs scp | peak RSS |", "|---|---|---|---|---|",
                  row("scp", scp, size, None), row("rsync -a", rsync, size, base),
                  row("aifactory submit, data: not on the site (send + sha256sum there + sbatch)", aif, size, base),
                  "", f"First submit including hashing {args.size} MiB here: {first:.1f} s.", "",
                  "## A job whose data is already on the site", "", "| how | median (runs) | site disk added |",
                  "|---|---|---|",
                  f"| submit, {args.size} MiB data: already stored | {statistics.median(r[0] for r in again):.2f} s "
                  f"({', '.join(f'{r[0]:.1f}' for r in again)}) | {du1 - du0:,} bytes |",
                  f"| submit, no input | {statistics.median(r[0] for r in none):.2f} s "
                  f"({', '.join(f'{r[0]:.1f}' for r in none)}) | {du2 - du1:,} bytes |", ""]
        # fetch: a job that writes the file, then fetched again and again
        out = src / "out.yaml"
        out.write_text(f"name: fo\nrun: head -c {size} /dev/urandom > out.bin\nresources: {{time: 5m}}\n"
                       "download: [out.bin]\n")
        r = subprocess.run([*AIF, "submit", str(out), "--site", "benchdata", "--wait", "--json"], env=env,
                           capture_output=True, text=True, check=True)
        job = json.loads(r.stdout)["jobs"][0]
        remote = f"{job['workdir']}/out.bin"
        local = work / "fetched"

        def clean_local() -> None:
            shutil.rmtree(local, ignore_errors=True)
            local.mkdir()

        fscp = [run(["scp", "-q", "-F", str(SSH_CONFIG), f"testbed:{remote}", str(local)], setup=clean_local)
                for _ in range(n)]
        frsync = [run(["rsync", "-a", "-e", f"ssh -F {SSH_CONFIG}", f"testbed:{remote}", str(local)],
                      setup=clean_local) for _ in range(n)]
        faif = [run([*AIF, "fetch", job["id"], "--dest", str(local)], env=env, setup=clean_local) for _ in range(n)]
        base = statistics.median(r[0] for r in fscp)
        lines += ["## Fetch", "", "| how | median (runs) | rate | vs scp | peak RSS |", "|---|---|---|---|---|",
                  row("scp", fscp, size, None), row("rsync -a", frsync, size, base),
                  row("aifactory fetch", faif, size, base)]
        sh(f"rm -rf {dest} {STORE} {job['workdir']}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
