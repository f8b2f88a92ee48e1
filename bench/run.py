"""Benchmarks of aifactory against its floor and against plain OpenSSH, measured side by side in
one run on the test bed (tests/testbed/start.sh must be up). Prints a Markdown table and, with
--write, records it with the machine description in docs/benchmarks.md.

    python3 bench/run.py [--quick] [--write]

1. `aifactory --help` vs `python -c pass` and `sbatch --help`
2. `aifactory submit` of one job vs `ssh host sbatch --parsable job.sh` (fresh connection each, and
   over a kept-open ControlMaster connection)
3. `aifactory status` with 1, 100 and 1000 tracked live jobs (remote commands counted)
4. uploading 1000 small files: aifactory's tar stream vs `scp -r` and `rsync` over the same sshd

    python3 bench/run.py --startup-vs OTHER_CHECKOUT [--quick]

compares only the start-up of `aifactory --help` and `aifactory list` (20 tracked jobs) between this
checkout and another one (e.g. a `git worktree` of an older commit), run alternately in one loop so
both see the same machine load. Needs no test bed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def timed(
    cmd: list[str] | str, runs: int, env: dict[str, str] | None = None, shell: bool = False, setup: object = None
) -> list[float]:
    out = []
    for _ in range(runs):
        if callable(setup):
            setup()
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        out.append(time.perf_counter() - t0)
    return out


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def aif_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIFACTORY_HOME=str(home),
        AIFACTORY_PROFILES=str(REPO / "tests" / "profiles"),
        AIFACTORY_ACCOUNT=ACCOUNT,
        AIFACTORY_SSH_CONFIG=str(home / "ssh_config_empty"),
        NO_COLOR="1",
    )
    home.mkdir(parents=True, exist_ok=True)
    (home / "ssh_config_empty").write_text("")
    return env


AIF = [sys.executable, "-m", "aifactory_cli"]


def bench_help(runs: int) -> list[tuple[str, float]]:
    return [
        ("python -c pass", med(timed([sys.executable, "-c", "pass"], runs))),
        ("sbatch --help", med(timed(["sbatch", "--help"], runs))),
        ("aifactory --help", med(timed([*AIF, "--help"], runs))),
    ]


def bench_submit(runs: int, work: Path) -> list[tuple[str, float]]:
    env = aif_env(work / "home-submit")
    spec = work / "one.yaml"
    spec.write_text("name: one\nrun: 'true'\nresources: {time: 5m}\nslurm: {hold: true}\n")
    script = "#!/bin/bash\n#SBATCH --hold\n#SBATCH --output=/dev/null\n#SBATCH --time=5\ntrue\n"
    subprocess.run(
        ["ssh", "-F", str(SSH_CONFIG), "testbed", "cat > /tmp/bench-job.sh"], input=script.encode(), check=True
    )
    fresh = timed(
        ["ssh", "-F", str(SSH_CONFIG), "testbed", f"sbatch --parsable --account={ACCOUNT} /tmp/bench-job.sh"], runs
    )
    sock = work / "cm.sock"
    master = [
        "ssh",
        "-F",
        str(SSH_CONFIG),
        "-o",
        "ControlMaster=yes",
        "-o",
        f"ControlPath={sock}",
        "-o",
        "ControlPersist=60",
        "-fN",
        "testbed",
    ]
    subprocess.run(master, check=True)
    reuse = timed(
        [
            "ssh",
            "-F",
            str(SSH_CONFIG),
            "-o",
            f"ControlPath={sock}",
            "testbed",
            f"sbatch --parsable --account={ACCOUNT} /tmp/bench-job.sh",
        ],
        runs,
    )
    subprocess.run(
        ["ssh", "-F", str(SSH_CONFIG), "-o", f"ControlPath={sock}", "-O", "exit", "testbed"], stderr=subprocess.DEVNULL
    )
    aif = timed([*AIF, "submit", str(spec), "--site", "testbed"], runs, env={**env, "AIFACTORY_PERSIST": "0"})
    agent_env = {**env, "AIFACTORY_PERSIST": "120"}
    subprocess.run(
        [*AIF, "submit", str(spec), "--site", "testbed"],
        env=agent_env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # starts the agent
    warm = timed([*AIF, "submit", str(spec), "--site", "testbed"], runs, env=agent_env)
    subprocess.run(["ssh", "-F", str(SSH_CONFIG), "testbed", "scancel --user=hpcuser --state=PENDING"], check=False)
    return [
        ("ssh host sbatch (fresh connection)", med(fresh)),
        ("ssh host sbatch (ControlMaster reuse)", med(reuse)),
        ("aifactory submit, own connection (AIFACTORY_PERSIST=0)", med(aif)),
        ("aifactory submit, warm connection agent (ssh.persist)", med(warm)),
    ]


def bench_status(runs: int, work: Path, counts: list[int]) -> list[tuple[str, float, int, int]]:
    sys.path.insert(0, str(REPO / "src"))
    rows = []
    script = "#!/bin/bash\n#SBATCH --hold\n#SBATCH --output=/dev/null\ntrue\n"
    loop = (
        f"cat > /tmp/bench-held.sh && for i in $(seq {max(counts)}); do sbatch --parsable "
        f"--account={ACCOUNT} --time=5 /tmp/bench-held.sh; done"
    )
    ids = subprocess.run(
        ["ssh", "-F", str(SSH_CONFIG), "testbed", loop], input=script, capture_output=True, text=True, check=True
    ).stdout.split()
    time.sleep(2)
    try:
        for n in counts:
            home = work / f"home-status-{n}"
            env = aif_env(home)
            code = (
                "import os\nfrom aifactory_cli.jobs.store import Store, Job, now_iso\n"
                "from aifactory_cli import paths\n"
                "s = Store()\n"
                f"for i, sid in enumerate({ids[:n]!r}):\n"
                "    t = now_iso()\n"
                "    s.add(Job(id=f'b{i:07d}', token=f'b{i:07d}'+'0'*24, name='held', site='testbed', state='PENDING',"
                " created_at=t, updated_at=t, slurm_job_id=sid, workdir='/tmp'))\n"
            )
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            env["AIFACTORY_PERSIST"] = "0"
            samples = timed([*AIF, "status", "--json"], runs, env=env)
            probe = (
                "from aifactory_cli.service.session import Service\n"
                "with Service() as s:\n"
                "    jobs = s.status([])\n"
                "    t = s.backend('testbed').transport\n"
                "    print(t.connections_opened, t.commands_run)\n"
            )
            conns, cmds = subprocess.run(
                [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
            ).stdout.split()
            rows.append((f"aifactory status, {n} live jobs", med(samples), int(conns), int(cmds)))
            if n == max(counts):
                agent_env = {**env, "AIFACTORY_PERSIST": "120"}
                subprocess.run([*AIF, "status"], env=agent_env, check=True, stdout=subprocess.DEVNULL)
                warm = timed([*AIF, "status", "--json"], runs, env=agent_env)
                rows.append((f"aifactory status, {n} live jobs, warm connection agent", med(warm), 0, 1))
    finally:
        for i in range(0, len(ids), 500):
            subprocess.run(
                ["ssh", "-F", str(SSH_CONFIG), "testbed", "scancel " + " ".join(ids[i : i + 500])], check=False
            )
    return rows


def bench_upload(runs: int, work: Path, nfiles: int) -> list[tuple[str, float]]:
    src = work / "files"
    (src / "data").mkdir(parents=True, exist_ok=True)
    for i in range(nfiles):
        (src / "data" / f"f{i:04d}.txt").write_text(f"{i}\n" * 50)
    spec = src / "up.yaml"
    spec.write_text("name: up\nrun: 'true'\nupload: [data/]\nresources: {time: 5m}\nslurm: {hold: true}\n")
    env = aif_env(work / "home-upload")
    dest = "/tmp/bench-upload"
    ssh = ["ssh", "-F", str(SSH_CONFIG), "testbed"]

    def clean() -> None:
        subprocess.run([*ssh, f"rm -rf {dest}; mkdir -p {dest}"], check=True)

    scp = timed(["scp", "-q", "-r", "-F", str(SSH_CONFIG), str(src / "data"), f"testbed:{dest}/"], runs, setup=clean)
    rsync = timed(
        ["rsync", "-a", "-e", f"ssh -F {SSH_CONFIG}", str(src / "data"), f"testbed:{dest}/"], runs, setup=clean
    )
    aif = timed([*AIF, "submit", str(spec), "--site", "testbed"], runs, env=env)
    subprocess.run([*ssh, "scancel --user=hpcuser --state=PENDING"], check=False)
    return [
        (f"scp -r ({nfiles} files)", med(scp)),
        (f"rsync -a ({nfiles} files)", med(rsync)),
        (f"aifactory submit with {nfiles} files (upload + sbatch)", med(aif)),
    ]


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    slurm = subprocess.run(["sbatch", "--version"], capture_output=True, text=True).stdout.strip()
    return (
        f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} cores ({cpu}), "
        f"{int(mem) // 1024 // 1024} GiB RAM, {slurm}, OpenSSH + Slurm test bed on 127.0.0.1"
    )


def startup_vs(other: Path, runs: int) -> str:
    """`--help` and `list` of this checkout and of `other`, alternated run by run; a Markdown table."""
    trees = {"this checkout": REPO, f"{other}": other.resolve()}
    for tree in trees.values():
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(tree / "src")], check=True, stdout=subprocess.DEVNULL
        )
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        envs = {}
        for label, tree in trees.items():
            env = aif_env(Path(tmp) / label.replace("/", "_"))
            env["PYTHONPATH"] = str(tree / "src")
            env["AIFACTORY_PROFILES"] = str(tree / "tests" / "profiles")
            env.pop("AIFACTORY_SSH_CONFIG", None)
            envs[label] = env
            for _ in range(20):  # tracked jobs for `list`, on the embedded local site
                subprocess.run(
                    [*AIF, "submit", str(tree / "examples" / "hello.yaml"), "--site", "local"],
                    env=env,
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
        for _ in range(runs):
            for cmd in (["--help"], ["list"]):
                for label in trees:
                    times.setdefault((" ".join(cmd), label), []).extend(timed([*AIF, *cmd], 1, env=envs[label]))
    lines = ["| command | " + " | ".join(trees) + " | ratio |", "|---|---|---|---|"]
    for cmd in ("--help", "list"):
        a, b = (med(times[(cmd, label)]) for label in trees)
        lines.append(f"| `aifactory {cmd}` | {a * 1000:.0f} ms | {b * 1000:.0f} ms | {a / b:.2f}x |")
    return f"Start-up, medians of {runs} alternated runs each ({machine()}):\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer runs")
    ap.add_argument("--write", action="store_true", help="write docs/benchmarks.md")
    ap.add_argument(
        "--startup-vs",
        type=Path,
        metavar="CHECKOUT",
        help="only compare start-up (--help, list) with another checkout, side by side",
    )
    args = ap.parse_args()
    runs = 5 if args.quick else 15
    if args.startup_vs:
        print(startup_vs(args.startup_vs, runs * 2))
        return
    if not (CLIENT / "id_ed25519").exists():
        raise SystemExit("the test bed is not up: bash tests/testbed/start.sh")
    lines = [
        f"Machine: {machine()}",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; medians of {runs} runs each.",
        "",
    ]
    # as after `pip install`: the package's bytecode exists (this machine sets PYTHONDONTWRITEBYTECODE,
    # so a source checkout would otherwise be compiled again on every run)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "src")], check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        h = bench_help(runs * 2)
        floor = dict(h)
        lines += [
            "## 1. Start-up",
            "",
            "| command | median | vs python -c pass | vs sbatch --help |",
            "|---|---|---|---|",
        ]
        for name, t in h:
            lines.append(
                f"| `{name}` | {t * 1000:.0f} ms | {t / floor['python -c pass']:.2f}x | "
                f"{t / floor['sbatch --help']:.2f}x |"
            )
        s = bench_submit(runs, work)
        base = s[0][1]
        lines += ["", "## 2. Submit one job", "", "| how | median | vs fresh `ssh host sbatch` |", "|---|---|---|"]
        lines += [f"| {name} | {t * 1000:.0f} ms | {t / base:.2f}x |" for name, t in s]
        st = bench_status(max(3, runs // 3), work, [1, 100, 1000])
        lines += [
            "",
            "## 3. Status of tracked live jobs",
            "",
            "| how | median | SSH connections | remote commands |",
            "|---|---|---|---|",
        ]
        lines += [f"| {name} | {t * 1000:.0f} ms | {c} | {k} |" for name, t, c, k in st]
        up = bench_upload(max(3, runs // 3), work, 1000)
        base = up[0][1]
        lines += ["", "## 4. Upload 1000 small files", "", "| how | median | vs scp -r |", "|---|---|---|"]
        lines += [f"| {name} | {t * 1000:.0f} ms | {t / base:.2f}x |" for name, t in up]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        out = REPO / "docs" / "benchmarks.md"
        head = out.read_text().split("<!-- results -->")[0] if out.exists() else "# Benchmarks\n\n"
        out.write_text(head.rstrip("\n") + "\n\n<!-- results -->\n" + text)
        print(json.dumps({"written": str(out)}))


if __name__ == "__main__":
    main()
