"""Record how each Slurm version reports a job it cancelled itself because its afterok dependency
failed (`--kill-on-invalid-dep=yes`, which aifactory sets on every dependent job), beside one a
person cancelled while it waited on the same dependency, once squeue has forgotten them: then only
sacct is left (tests/data/slurm/<version>/sacct_killed_dep.txt, killed_dep_ids.txt).

Run with a test bed up (~45 s: squeue keeps ended jobs for the bed's MinJobAge, 30 s):
    python3 tests/data/record_killed_dependency.py
Another bed: TESTBED_SSH_CONFIG / TESTBED_SSH_HOST as for record_slurm_output.py.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_slurm_output import sbatch, ssh

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from aifactory_cli.scheduler.slurm import sacct_command, squeue_command


def main() -> None:
    version = ssh("sinfo --version").stdout.split()[1]
    out = Path(__file__).resolve().parent / "slurm" / ".".join(version.split(".")[:2])
    out.mkdir(parents=True, exist_ok=True)
    parent = sbatch("", "sleep 2; exit 3")
    killed = sbatch(f"--kill-on-invalid-dep=yes --dependency=afterok:{parent}", "true")
    by_user = sbatch(f"--kill-on-invalid-dep=yes --dependency=afterok:{parent}", "true")
    ssh(f"scancel {by_user}")
    ids = {"parent": parent, "killed": killed, "by_user": by_user}
    queue = shlex.join(squeue_command(list(ids.values())))
    seen = ""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # until squeue has forgotten all three
        now = ssh(f"{queue} 2>/dev/null").stdout
        if not now.strip() and seen:
            break
        if any(line.startswith(f"{killed}|CANCELLED") for line in now.splitlines()):
            seen = seen or now  # the moment squeue says why Slurm cancelled it
        time.sleep(2)
    else:
        raise SystemExit("squeue still lists the jobs after 180 s")
    (out / "squeue_killed_dep.txt").write_text(seen)
    (out / "sacct_killed_dep.txt").write_text(ssh(shlex.join(sacct_command(list(ids.values())))).stdout)
    (out / "killed_dep_ids.txt").write_text("".join(f"{k}={v}\n" for k, v in ids.items()))
    print(f"recorded into {out}")


if __name__ == "__main__":
    main()
