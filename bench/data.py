"""Data at the size of AI work on the test bed (tests/testbed/start.sh must be up), side by side in one
run over the same sshd, each against `scp` and `rsync` of the same data:

1. --size MiB (one or more sizes, default 1024; 0: none): a large file sent into a spec's `data:` store
   and fetched back with `aifactory fetch`; then a job whose data is already on the site, next to a job
   with no input (--skip-stored: not for any size; --skip-stored MIB: not for sizes above MIB).
2. --small N (default 0: none): N files of --small-bytes each (10,000 x 10,000 bytes: 100 MB), random,
   in N/1000 subdirectories, sent as a spec's `data:` directory (`scp -r`, `rsync -a` of the tree) and
   fetched back from a job that wrote as many (`download: ["tree/**"]`).

Medians of --runs runs (each run listed), the ratio to scp (above 1: faster than scp) and the peak RSS of
the command (GNU time). The tools take turns: each round runs scp, rsync and aifactory once (`rounds`).
Each run starts after a `sync` (outside the timing). Every copy is removed right after its run and each
size's file once its section is done: a 10 GiB run needs about 20 GB free (the file here and one copy on
the site; then the job's output on the site and its fetched copy here). The site is this machine: its
paths are under SCRATCH.

    python3 bench/data.py [--size 1024 10240] [--small 10000] [--runs 3] [--skip-stored [MIB]] [--controlmaster]
                          [--disk GIB]

--disk GIB (root): both ends' copies on a fresh, journaled ext4 of GIB GiB on a loop device (`own_disk`:
this VM's own disk has no journal, which made every tool's file creates after a removal 20x slower).

--controlmaster: as a user whose ~/.ssh/config has ControlMaster auto + ControlPath + ControlPersist and
who logged in once: an ssh_config for the bed with those, a master started before the runs (stopped
after), and aifactory (AIFACTORY_SSH_CONFIG), scp and rsync all use it; aifactory's large transfers
then go through that master (transport/ssh/mux.py), which each aifactory run must say.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIENT = Path("/tmp/testbed/client")
SSH_CONFIG = CLIENT / "ssh_config"
ACCOUNT = "project_465000001"
SCRATCH = f"/scratch/{ACCOUNT}/hpcuser"
SITE = SCRATCH  # the site's side of each copy: the store, the scp and rsync destinations (--disk: its own disk)
STORE = f"{SITE}/aif-bench-data"
AIF = [sys.executable, "-m", "aifactory_cli"]
SSH = ["ssh", "-F", str(SSH_CONFIG), "testbed"]
SCP = ["scp", "-q", "-F", str(SSH_CONFIG)]
RSYNC = ["rsync", "-a", "-e", f"ssh -F {SSH_CONFIG}"]

VIA = ""  # with --controlmaster: what each aifactory transfer must say ("via the OpenSSH ControlMaster")
Result = tuple[float, int, str, str, int]  # seconds, peak RSS in KB, stderr, stdout, agent's peak RSS in KB


def controlmaster(work: Path) -> Path:
    """An ssh_config for the bed (`testbed`, and 127.0.0.1 as the profile names it: one ControlPath)
    with a ControlMaster, the master started; SSH, SCP and RSYNC use it from now on."""
    global SSH_CONFIG, SSH, SCP, RSYNC, VIA
    block = SSH_CONFIG.read_text().split("Host testbed\n", 1)[1].split("\nHost ", 1)[0]
    config = work / "ssh_config_cm"
    config.write_text(
        f"Host testbed 127.0.0.1\n{block.rstrip()}\n"
        "    ControlMaster auto\n    ControlPath /tmp/aif-bench-cm-%C\n    ControlPersist 600\n"
    )
    SSH_CONFIG = config
    SSH = ["ssh", "-F", str(config), "testbed"]
    SCP = ["scp", "-q", "-F", str(config)]
    RSYNC = ["rsync", "-a", "-e", f"ssh -F {config}"]
    subprocess.run([*SSH[:-1], "-MNf", "testbed"], check=True, stdin=subprocess.DEVNULL)
    subprocess.run([*SSH[:-1], "-O", "check", "testbed"], check=True)
    VIA = "via the OpenSSH ControlMaster"
    return config


@contextlib.contextmanager
def own_disk(gib: int) -> Iterator[Path]:
    """A fresh ext4, with a journal, on a loop device (a sparse image of `gib` GiB in /var/tmp), mounted
    for this run: the local work dir and the site's side of every copy (SITE) go on it. Why: this VM's
    disk is an ext4 without a journal, and such an ext4 does not reuse an inode freed in the last 60-300 s,
    scanning past each one at every create (perf: ext4_create -> recently_deleted). After a run's copy is
    removed, the next 10,000 creates of any tool took 10 s instead of 0.5 s, so the small-file rows
    measured the order of the runs. Needs root (mount)."""
    global SITE, STORE
    if os.geteuid() != 0:
        raise SystemExit("--disk needs root (it mounts a loop device)")
    image, mnt = Path(f"/var/tmp/aif-bench-disk-{os.getpid()}.img"), Path(f"/var/tmp/aif-bench-disk-{os.getpid()}")
    with image.open("wb") as f:
        f.truncate(gib << 30)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
        try:
            (mnt / "site").mkdir()
            shutil.chown(mnt / "site", "hpcuser")
            SITE, STORE = str(mnt / "site"), str(mnt / "site" / "aif-bench-data")
            yield mnt
        finally:
            if subprocess.run(["umount", str(mnt)], check=False).returncode:
                subprocess.run(["umount", "-l", str(mnt)], check=False)
    finally:
        image.unlink()
        with contextlib.suppress(OSError):
            mnt.rmdir()


def aif_env(home: Path, store: str | None = None) -> dict[str, str]:
    """The environment of the aifactory runs: a private AIFACTORY_HOME, whose site `benchdata` is the
    test bed as LUMI (`lumi-bed`) with its data store at `store`."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "ssh_config_empty").write_text("")
    profiles = home / "profiles"
    profiles.mkdir(exist_ok=True)
    # lumi-bed connects per command (persist: 0, for the tests); a user of lumi has its 5 min agent
    (profiles / "benchdata.yaml").write_text(f"extends: lumi-bed\ndata_dir: {store or STORE}\nssh: {{persist: 300}}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIFACTORY_")}
    env.update(
        AIFACTORY_HOME=str(home),
        AIFACTORY_ACCOUNT=ACCOUNT,
        NO_COLOR="1",
        AIFACTORY_PROFILES=os.pathsep.join(
            [str(profiles), str(REPO / "tests/profiles/bed"), str(REPO / "tests/profiles")]
        ),
        AIFACTORY_SSH_CONFIG=str(SSH_CONFIG if VIA else home / "ssh_config_empty"),
    )
    return env


def run(
    cmd: list[str],
    env: dict[str, str] | None = None,
    setup: Callable[[], None] | None = None,
    teardown: Callable[[], None] | None = None,
) -> Result:
    """(seconds, peak RSS in KB of the command, its stderr, its stdout), with GNU time around it;
    `setup` and `teardown` run before and after, outside the time."""
    if setup:
        setup()
    # every run starts with nothing left to write back from the runs before it (outside the timing): on
    # this VM's disk the same 10,000 file creates took 0.5 s to 9 s depending on what was still dirty
    os.sync()
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "RSS=%M", *cmd], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr[-2000:]}")
    rss = int(p.stderr.rsplit("RSS=", 1)[1].split()[0])
    agent = agent_peak(env) if env else 0
    if teardown:
        teardown()
    return dt, rss, p.stderr, p.stdout, agent


def agents(env: dict[str, str]) -> list[int]:
    """The pids of the connection agents of this run's AIFACTORY_HOME (they hold the SSH connection and,
    for large files, read and write the files themselves: their memory counts)."""
    home = env["AIFACTORY_HOME"].encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if b"agent.daemon" in cmd and home in environ:
            found.append(int(pid))
    return found


def agent_peak(env: dict[str, str]) -> int:
    """The highest peak RSS (VmHWM, KB) of this run's agents so far."""
    peak = 0
    for pid in agents(env):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
    return peak


def fresh_agent(env: dict[str, str]) -> None:
    """Stop this run's agents, so that the next rows' agent peak is theirs alone."""
    for pid in agents(env):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    time.sleep(0.5)


def sh(cmd: str) -> str:
    return subprocess.run([*SSH, cmd], capture_output=True, text=True, check=True).stdout


def rm_site(*paths: str) -> None:
    """Remove site paths (the store's files are 0400 in 0700 dirs: made writable first)."""
    quoted = " ".join(f"'{p}'" for p in paths)
    sh(f"chmod -R u+w {quoted} 2>/dev/null; rm -rf {quoted}")


def du_site(path: str) -> int:
    return int(sh(f"du -sb '{path}' 2>/dev/null || echo 0").split()[0])


def job_of(result: Result) -> dict:
    return json.loads(result[3])["jobs"][0]


def drop_jobs(results: list[Result]) -> None:
    """Cancel the (held) jobs these `submit --json` runs made and remove their job dirs."""
    drop([job_of(r) for r in results])


def drop(jobs: list[dict]) -> None:
    if jobs:
        sh(f"scancel {' '.join(j['slurm_job_id'] for j in jobs)} 2>/dev/null; true")
        rm_site(*(j["workdir"] for j in jobs))


def drop_all(env: dict[str, str]) -> None:
    """Every job of this run's private AIFACTORY_HOME (e.g. after a failure): cancelled, job dir removed."""
    r = subprocess.run([*AIF, "list", "--json"], env=env, capture_output=True, text=True)
    if r.returncode == 0 and r.stdout.strip():
        drop([j for j in json.loads(r.stdout)["jobs"] if j.get("workdir") and j.get("slurm_job_id")])


def expect(what: str, got: object, want: object) -> None:
    if got != want:
        raise SystemExit(f"{what}: {got!r}, expected {want!r}")


def submits(
    spec: Path, env: dict[str, str], runs: int, setup: Callable[[], None] | None = None, sent: int = 0
) -> list[Result]:
    """`runs` timed submits of `spec`, each job cancelled and its job dir removed right after its run (the
    store stays); with `sent`, each must have sent that many data files."""
    out = []
    for _ in range(runs):
        r = run(submit(spec, env), env=env, setup=setup)
        drop_jobs([r])
        if sent and f"data: {sent} file(s), {sent} sent" not in r[2]:
            raise SystemExit(f"the data were not all sent: {r[2][-1000:]}")
        if sent and VIA not in r[2]:
            raise SystemExit(f"the data did not go {VIA}: {r[2][-1000:]}")
        out.append(r)
    return out


def rounds(runs: int, *steps: Callable[[], Result]) -> list[list[Result]]:
    """`runs` rounds, one run of each of `steps` in turn per round: this VM's speed swings by 1.5x
    within minutes (rsync of the same 10,000 files 1.5 s, then 2.4 s), and a tool whose runs all
    fell in a slow minute compared badly with one whose runs did not."""
    out: list[list[Result]] = [[] for _ in steps]
    for _ in range(runs):
        for got, step in zip(out, steps, strict=True):
            got.append(step())
    return out


def med(results: list[Result]) -> str:
    return f"{statistics.median(r[0] for r in results):.2f} s ({', '.join(f'{r[0]:.1f}' for r in results)})"


def row(name: str, results: list[Result], size: int, base: float | None, files: int = 0) -> str:
    t = statistics.median(r[0] for r in results)
    rss = max(r[1] for r in results) / 1024
    agent = max(r[4] for r in results) / 1024
    ratio = f"{base / t:.2f}x" if base else "1.00x"
    mbs = size / t / 1e6
    rate = f"{mbs:.{0 if mbs >= 10 else 1}f} MB/s" + (f", {files / t:,.0f} files/s" if files else "")
    memory = f"{rss:.0f} MB" + (f" + agent {agent:.0f} MB" if agent else "")
    return f"| {name} | {med(results)} | {rate} | {ratio} | {memory} |"


HEAD = [
    "| how | median (runs) | rate | vs scp | peak RSS (aifactory: the command + its site's agent) |",
    "|---|---|---|---|---|",
]


def submit(spec: Path, env: dict[str, str], *extra: str) -> list[str]:
    return [*AIF, "submit", str(spec), "--site", "benchdata", "--json", *extra]


def big(mib: int, runs: int, stored: bool, work: Path, env: dict[str, str]) -> list[str]:
    """Upload, already stored (if `stored`) and fetch of one file of `mib` MiB."""
    size = mib * 1024 * 1024
    src = work / f"big{mib}"
    (src / "ds").mkdir(parents=True)
    data = src / "ds" / "big.bin"
    with data.open("wb") as f:
        subprocess.run(["head", "-c", str(size), "/dev/urandom"], stdout=f, check=True)
    spec = src / "job.yaml"
    spec.write_text("name: bd\nrun: 'true'\nresources: {time: 5m}\nslurm: {hold: true}\ndata: [ds]\n")
    nodata = src / "nodata.yaml"
    nodata.write_text("name: nd\nrun: 'true'\nresources: {time: 5m}\nslurm: {hold: true}\n")
    dest = f"{SITE}/bench-up"

    def clean_remote() -> None:
        rm_site(dest, STORE)
        sh(f"mkdir -p {dest}")

    def landed() -> None:  # each copy is checked, then removed at once
        expect("bytes on the site", du_site(f"{dest}/big.bin"), size)
        rm_site(dest)

    # hashing is done once and cached (HashCache): measured apart from the transfer
    clean_remote()
    first = run(submit(spec, env), env=env)
    made = [first]
    rm_site(STORE)
    fresh_agent(env)
    scp, rsync, aif = rounds(
        runs,
        lambda: run([*SCP, str(data), f"testbed:{dest}/"], setup=clean_remote, teardown=landed),
        lambda: run([*RSYNC, str(data), f"testbed:{dest}/"], setup=clean_remote, teardown=landed),
        lambda: submits(spec, env, 1, setup=clean_remote, sent=1)[0],
    )
    base = statistics.median(r[0] for r in scp)
    lines = [
        f"## Upload of one {mib} MiB file",
        "",
        *HEAD,
        row("scp", scp, size, None),
        row("rsync -a", rsync, size, base),
        row("aifactory submit, data: not on the site (send + sha256sum there + sbatch)", aif, size, base),
        "",
        f"First submit including hashing {mib} MiB here: {first[0]:.1f} s.",
        "",
    ]
    if stored:  # the store holds the file from the last run above
        again = submits(spec, env, runs)
        none = submits(nodata, env, runs)
        s0 = du_site(STORE)
        one = run(submit(spec, env), env=env)
        added_data = du_site(job_of(one)["workdir"]) + du_site(STORE) - s0
        zero = run(submit(nodata, env), env=env)
        added_none = du_site(job_of(zero)["workdir"])
        made += [one, zero]
        lines += [
            "## A job whose data is already on the site",
            "",
            "| how | median (runs) | site disk added (job dir + store) |",
            "|---|---|---|",
            f"| submit, {mib} MiB data: already stored | {med(again)} | {added_data:,} bytes |",
            f"| submit, no input | {med(none)} | {added_none:,} bytes |",
            "",
        ]
    drop_jobs(made)
    rm_site(STORE, dest)
    shutil.rmtree(src)  # the job's output and its fetched copy need the room now
    # fetch: a job that writes the file, then fetched again and again
    out = work / "out.yaml"
    out.write_text(
        f"name: fo\nrun: head -c {size} /dev/urandom > out.bin\nresources: {{time: 30m}}\ndownload: [out.bin]\n"
    )
    job = job_of(run(submit(out, env, "--wait"), env=env))
    remote = f"{job['workdir']}/out.bin"
    local = work / "fetched"

    def clean_local() -> None:
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir()

    def fetched() -> None:
        expect("bytes fetched", (local / "out.bin").stat().st_size, size)
        shutil.rmtree(local)

    def fetched_via(result: Result) -> Result:
        if VIA not in result[2]:
            raise SystemExit(f"the fetch did not go {VIA}: {result[2][-1000:]}")
        return result

    fresh_agent(env)
    fscp, frsync, faif = rounds(
        runs,
        lambda: run([*SCP, f"testbed:{remote}", str(local)], setup=clean_local, teardown=fetched),
        lambda: run([*RSYNC, f"testbed:{remote}", str(local)], setup=clean_local, teardown=fetched),
        lambda: fetched_via(
            run([*AIF, "fetch", job["id"], "--dest", str(local)], env=env, setup=clean_local, teardown=fetched)
        ),
    )
    rm_site(job["workdir"])
    base = statistics.median(r[0] for r in fscp)
    return [
        *lines,
        f"## Fetch of one {mib} MiB file",
        "",
        *HEAD,
        row("scp", fscp, size, None),
        row("rsync -a", frsync, size, base),
        row("aifactory fetch", faif, size, base),
        "",
    ]


def plan(count: int) -> list[tuple[str, int]]:
    """The small files' subdirectories and how many files each holds (about 1000 a directory)."""
    dirs = max(1, count // 1000)
    return [(f"d{i:02d}", count // dirs + (i < count % dirs)) for i in range(dirs)]


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def small(count: int, each: int, runs: int, work: Path, env: dict[str, str]) -> list[str]:
    """Upload and fetch of `count` files of `each` bytes in a few subdirectories."""
    size = count * each
    src = work / "small"
    tree = src / "tree"
    for d, n in plan(count):
        (tree / d).mkdir(parents=True)
        for i in range(n):
            (tree / d / f"f{i:05d}").write_bytes(os.urandom(each))
    spec = src / "job.yaml"
    spec.write_text("name: sd\nrun: 'true'\nresources: {time: 5m}\nslurm: {hold: true}\ndata: [tree]\n")
    dest = f"{SITE}/bench-up-small"

    def clean_remote() -> None:
        rm_site(dest, STORE)
        sh(f"mkdir -p {dest}")

    def landed() -> None:
        expect("files on the site", int(sh(f"find {dest}/tree -type f | wc -l")), count)
        rm_site(dest)

    clean_remote()
    first = run(submit(spec, env), env=env)  # hashing, apart from the transfer
    rm_site(STORE)
    fresh_agent(env)
    scp, rsync, aif = rounds(
        runs,
        lambda: run([*SCP, "-r", str(tree), f"testbed:{dest}/"], setup=clean_remote, teardown=landed),
        lambda: run([*RSYNC, str(tree), f"testbed:{dest}/"], setup=clean_remote, teardown=landed),
        lambda: submits(spec, env, 1, setup=clean_remote, sent=count)[0],
    )
    stored = submits(spec, env, runs)  # the same data, now in the store
    if any(f"data: {count} file(s), 0 sent" not in r[2] for r in stored):
        raise SystemExit(f"data already stored were sent again: {stored[0][2][-1000:]}")
    drop_jobs([first])
    rm_site(STORE, dest)
    shutil.rmtree(src)
    base = statistics.median(r[0] for r in scp)
    lines = [
        f"## Upload of {count:,} files of {each:,} bytes ({size / 1e6:.1f} MB, {len(plan(count))} dir(s))",
        "",
        *HEAD,
        row("scp -r", scp, size, None, count),
        row("rsync -a", rsync, size, base, count),
        row("aifactory submit, data: [tree] not on the site (send + sha256sum there + sbatch)", aif, size, base, count),
        row("aifactory submit, data: [tree] already on the site (probe + links + sbatch)", stored, size, base, count),
        "",
        f"First submit including hashing the {count:,} files here: {first[0]:.1f} s.",
        "",
    ]
    # fetch: a job that writes as many files, then fetched again and again
    write = "".join(
        f"  mkdir -p tree/{d} && head -c {n * each} /dev/urandom | split -b {each} -a 5 -d - tree/{d}/f\n"
        for d, n in plan(count)
    )
    out = work / "outsmall.yaml"
    out.write_text(f"name: fs\nresources: {{time: 30m}}\ndownload: ['tree/**']\nrun: |\n{write}")
    job = job_of(run(submit(out, env, "--wait"), env=env))
    remote = f"{job['workdir']}/tree"
    local = work / "fetched"

    def clean_local() -> None:
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir()

    def fetched() -> None:
        expect("files fetched", count_files(local), count)
        shutil.rmtree(local)

    fresh_agent(env)
    fscp, frsync, faif = rounds(
        runs,
        lambda: run([*SCP, "-r", f"testbed:{remote}", str(local)], setup=clean_local, teardown=fetched),
        lambda: run([*RSYNC, f"testbed:{remote}", str(local)], setup=clean_local, teardown=fetched),
        lambda: run([*AIF, "fetch", job["id"], "--dest", str(local)], env=env, setup=clean_local, teardown=fetched),
    )
    rm_site(job["workdir"])
    base = statistics.median(r[0] for r in fscp)
    return [
        *lines,
        f"## Fetch of {count:,} files of {each:,} bytes (a job's `download: ['tree/**']`)",
        "",
        *HEAD,
        row("scp -r", fscp, size, None, count),
        row("rsync -a", frsync, size, base, count),
        row("aifactory fetch", faif, size, base, count),
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, nargs="+", default=[1024], help="MiB, one or more (0: no large file)")
    ap.add_argument("--small", type=int, default=0, metavar="N", help="also N small files (e.g. 10000)")
    ap.add_argument("--small-bytes", type=int, default=10_000, help="the size of each small file")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--skip-stored",
        type=int,
        nargs="?",
        const=0,
        default=None,
        metavar="MIB",
        help="no 'already stored' section (for sizes above MIB if given)",
    )
    ap.add_argument("--controlmaster", action="store_true", help="all through an OpenSSH ControlMaster")
    ap.add_argument(
        "--disk",
        type=int,
        default=0,
        metavar="GIB",
        help="both ends' copies on a fresh, journaled ext4 of GIB GiB (a loop device; root): see own_disk",
    )
    args = ap.parse_args()
    if not (CLIENT / "id_ed25519").exists():
        raise SystemExit("the test bed is not up: bash tests/testbed/start.sh")
    # as an installed aifactory has them: each module compiled once (with PYTHONDONTWRITEBYTECODE set, as
    # on this machine, a module changed since its last .pyc was compiled again at every command)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "src")], check=True, stdout=subprocess.DEVNULL)
    sizes = [s for s in args.size if s > 0]
    what = [f"{', '.join(f'{s} MiB' for s in sizes)} file"] if sizes else []
    if args.small:
        what.append(f"{args.small:,} files of {args.small_bytes:,} bytes")
    skip = {None: "", 0: "; --skip-stored"}.get(args.skip_stored, f"; --skip-stored {args.skip_stored}")
    lines = [
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {'; '.join(what) or 'nothing'}; medians of "
        f"{args.runs} runs (each run listed, the tools in turns){skip}; loopback, one sshd"
        f"{'; all through one OpenSSH ControlMaster' if args.controlmaster else ''}"
        f"{'; both ends on a fresh, journaled ext4 (loop device)' if args.disk else ''}; `python3 bench/data.py "
        f"{' '.join(sys.argv[1:])}`.",
        "",
    ]
    with contextlib.ExitStack() as stack:
        disk = stack.enter_context(own_disk(args.disk)) if args.disk else Path("/var/tmp")
        tmp = stack.enter_context(tempfile.TemporaryDirectory(dir=disk))
        work = Path(tmp)
        config = controlmaster(work) if args.controlmaster else None
        env = aif_env(work / "home")
        try:
            for mib in sizes:
                stored = args.skip_stored is None or (args.skip_stored > 0 and mib <= args.skip_stored)
                lines += big(mib, args.runs, stored, work, env)
            if args.small:
                lines += small(args.small, args.small_bytes, args.runs, work, env)
        finally:
            drop_all(env)
            fresh_agent(env)  # its socket and cwd are on the work dir's disk
            rm_site(STORE, f"{SITE}/bench-up", f"{SITE}/bench-up-small")
            if config is not None:
                subprocess.run(["ssh", "-F", str(config), "-O", "exit", "testbed"], check=False)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
