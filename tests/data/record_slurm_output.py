"""Record real Slurm output from a test bed into tests/data/slurm/<version>/ (for the parser tests,
which run on every version folder), <version> being the bed's Slurm release (`22.05`, `24.11`).

Run with the test bed up:  python3 tests/data/record_slurm_output.py
(`--quick`: only the interrupted-submission lookup, `usage`'s sacct and `sbatch --test-only`, ~10 s)
The 22.05 bed by default; another bed: TESTBED_SSH_CONFIG (an ssh_config) and TESTBED_SSH_HOST (its
Host), e.g. the 24.11 bed: TESTBED_SSH_CONFIG=/tmp/testbed24/client/ssh_config TESTBED_SSH_HOST=testbed24
Submits: a completed job, one failing with exit 3, one cancelled while running, one cancelled
while pending (held), one hitting its time limit, a 4-task array, a held array, a job whose
afterok dependency failed, and rejected submissions. Takes ~100 s (the TIMEOUT job).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from aifactory_cli.scheduler.slurm import SQUEUE_FORMAT, lookup_commands, sacct_command, squeue_command, status_command
from aifactory_cli.scheduler.slurm_site import check_command, test_only_command, usage_command
from aifactory_cli.transport import batch

SSH = [
    "ssh",
    "-F",
    os.environ.get("TESTBED_SSH_CONFIG", "/tmp/testbed/client/ssh_config"),
    os.environ.get("TESTBED_SSH_HOST", "testbed"),
]
# Every sbatch refusal recorded (label, options): Slurm's words and exit code on each version.
REJECTIONS = [
    ("bad-account", "--account=project_999999999"),
    ("bad-partition", "--partition=nosuch"),
    ("too-many-gpus", "--partition=small-g --gres=gpu:9"),
    ("time-over-limit", "--partition=dev-g --time=04:00:00"),
    ("bad-feature", "--constraint=nosuchfeature"),
    ("too-many-nodes", "--partition=small-g --nodes=3"),
    ("too-many-cpus", "--partition=small-g --ntasks=200"),
    ("too-much-memory", "--partition=small --mem=900G"),
    ("bad-qos", "--qos=nosuchqos"),
    ("bad-dependency", "--dependency=afterok:1"),
    ("bad-time-format", "--time=abc"),
    ("unknown-option", "--bogus-opt=1"),
    ("ambiguous-option", "--ti=5"),
]


def ssh(command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SSH, command], input=stdin, capture_output=True, text=True)


def sbatch(options: str, body: str) -> str:
    script = f"#!/bin/bash\n#SBATCH --account=project_465000001\n#SBATCH --output=/dev/null\n{body}\n"
    r = ssh(f"cd /tmp && sbatch --parsable --comment=aifactory:rec {options}", script)
    if r.returncode:
        raise SystemExit(f"sbatch {options} failed: {r.stderr}")
    return r.stdout.strip().split(";")[0]


def out_dir() -> Path:
    """tests/data/slurm/<major.minor> of the bed's Slurm (`slurm 22.05.8` -> 22.05)."""
    version = ssh("sinfo --version").stdout.split()[-1]
    out = Path(__file__).resolve().parent / "slurm" / ".".join(version.split(".")[:2])
    out.mkdir(parents=True, exist_ok=True)
    (out / "version.txt").write_text(version + "\n")
    return out


OUT = Path()


def save(name: str, text: str) -> None:
    (OUT / name).write_text(text)
    print(f"recorded {OUT.name}/{name} ({len(text.splitlines())} lines)")


def main() -> None:
    ids: dict[str, str] = {}
    ids["timeout"] = sbatch("--time=1", "sleep 300")
    ids["ok"] = sbatch("--time=5", "sleep 1; echo ok")
    ids["fail3"] = sbatch("--time=5", "exit 3")
    ids["running"] = sbatch("--time=5", "sleep 300")
    ids["held"] = sbatch("--time=5 --hold", "sleep 1")
    ids["array"] = sbatch("--time=5 --array=0-3", "echo $SLURM_ARRAY_TASK_ID")
    ids["array_held"] = sbatch("--time=5 --array=0-3%2 --hold", "echo x")
    ids["dep"] = sbatch(f"--time=5 --dependency=afterok:{ids['fail3']}", "echo never")
    ids["gpu"] = sbatch("--time=5 --partition=small-g --gpus-per-node=2", "sleep 1")
    time.sleep(4)
    all_ids = list(ids.values())
    save("squeue_live.txt", ssh(shlex.join(squeue_command(all_ids))).stdout)
    save("sacct_live.txt", ssh(shlex.join(sacct_command(all_ids))).stdout)
    ssh(f"scancel {ids['running']} {ids['held']} {ids['array_held']}")
    time.sleep(3)
    save("sacct_after_cancel.txt", ssh(shlex.join(sacct_command(all_ids))).stdout)
    # rejected submissions: real stderr and exit codes
    rejected = []
    for label, opts in REJECTIONS:
        r = ssh(f"cd /tmp && sbatch --parsable {opts}", "#!/bin/bash\nhostname\n")
        if r.returncode == 0:  # this version queued it (22.05 ignores a dependency on an unknown job)
            ssh(f"scancel {r.stdout.strip().split(';')[0]}")
        rejected.append(f"### {label} rc={r.returncode}\n{r.stderr}")
    save("sbatch_rejected.txt", "".join(rejected))
    ok = ssh("cd /tmp && sbatch --parsable --account=project_465000001 --output=/dev/null --wrap=true")
    save("sbatch_ok.txt", ok.stdout)
    deadline = time.time() + 150
    while time.time() < deadline:
        text = ssh(shlex.join(sacct_command([ids["timeout"]]))).stdout
        if "TIMEOUT" in text:
            break
        time.sleep(5)
    save("sacct_final.txt", ssh(shlex.join(sacct_command(all_ids))).stdout)
    save(
        "sacct_final_steps.txt",
        ssh("sacct --parsable2 --noheader --format=JobID,State,ExitCode -j " + ",".join(all_ids)).stdout,
    )
    # what `status` asks (epoch times) about the completed job
    save("sacct_epoch.txt", ssh("SLURM_TIME_FORMAT=%s " + shlex.join(sacct_command([ids["ok"]]))).stdout)
    save("ids.txt", "".join(f"{k}={v}\n" for k, v in ids.items()))
    ssh(f"scancel {ids['dep']}")  # its dependency failed: it would wait forever
    print("squeue format:", SQUEUE_FORMAT)


def record_quick() -> None:
    """What `find_submitted` asks Slurm (squeue comments, sacct WorkDirs), for a live (held) job
    and one that ended, each submitted from its own job dir with a token in its comment."""
    since = ssh("date -u +%Y-%m-%dT%H:%M:%S").stdout.strip()
    base = "aifactory/rec-lookup"
    ids = {}
    for name, opts in (("live", "--time=5 --hold"), ("ended", "--time=5")):
        workdir = f"{base}/{name}-0000000{len(ids)}"
        r = ssh(
            f"mkdir -p {workdir} && cd {workdir} && sbatch --parsable --comment=aifactory:tok-{name} "
            f"--account=project_465000001 --output=/dev/null {opts}",
            "#!/bin/bash\ntrue\n",
        )
        ids[name] = r.stdout.strip().split(";")[0]
    time.sleep(4)
    text = ssh(batch.command(lookup_commands(since))).stdout
    ssh(f"scancel {ids['live']}")
    save("lookup_live.txt", text)
    save("lookup_ids.txt", "".join(f"{k}={v}\n" for k, v in ids.items()))
    month = __import__("datetime").date.today().replace(day=1)
    save("sacct_usage.txt", ssh(shlex.join(usage_command(month))).stdout)
    script = "#!/bin/bash\n#SBATCH --account=project_465000001 --partition=small-g --gpus-per-node=2\ntrue\n"
    save("sbatch_test_only.txt", ssh(f"cd /tmp && {shlex.join(test_only_command())}", script).stderr)


def record_facts() -> None:
    """What `sites check` asks (sites_check.txt), and on a version with `squeue --only-job-state` a
    running job polled by `status` with it (status_light.txt, the job's id in light_ids.txt)."""
    save("sites_check.txt", ssh(check_command()).stdout)
    if ssh("squeue --only-job-state --noheader --me --states=BOOT_FAIL").returncode:
        return
    job = sbatch("--time=5", "sleep 60")
    time.sleep(4)
    save("status_light.txt", ssh(status_command([job], only_job_state=True)).stdout)
    ssh(f"scancel {job}")
    save("light_ids.txt", f"running={job}\n")


if __name__ == "__main__":
    OUT = out_dir()
    if sys.argv[1:] == ["--facts"]:
        record_facts()
    elif sys.argv[1:] == ["--quick"]:
        record_quick()
    else:
        main()
        record_quick()
