"""Record what `aifactory status` asks Slurm (`slurm.status_command`: squeue then sacct, epoch
times) about jobs that wait for different reasons, before and after `scancel`, into
tests/data/slurm/columns_<version>.txt (for the truthful-columns parser tests).

Run with the test bed up:  python3 tests/data/record_pending_columns.py  (~5 s)
Jobs: `begin`: pending with a start time 5 min ahead (squeue shows Slurm's EXPECTED start);
`held`: pending, held (no expected start); `running`: a running `sleep 120`. Snapshots: `live`
(all three as they are), then `cancelled` right after one scancel of all three, then `settled` 2 s
later. `ssh` to another bed: TESTBED_SSH_HOST (an ssh_config Host), TESTBED_SSH_CONFIG.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from aifactory_cli.scheduler.slurm import status_command

OUT = Path(__file__).resolve().parent / "slurm"
SSH = [
    "ssh",
    "-F",
    os.environ.get("TESTBED_SSH_CONFIG", "/tmp/testbed/client/ssh_config"),
    os.environ.get("TESTBED_SSH_HOST", "testbed"),
]


def ssh(command: str, stdin: str | None = None) -> str:
    r = subprocess.run([*SSH, command], input=stdin, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{command} failed: {r.stderr}")
    return r.stdout


def sbatch(options: str, body: str) -> str:
    script = f"#!/bin/bash\n#SBATCH --account=project_465000001\n#SBATCH --output=/dev/null\n{body}\n"
    return ssh(f"cd /tmp && sbatch --parsable {options}", script).strip().split(";")[0]


def main() -> None:
    version = ssh("sinfo --version").split()[-1]
    ids = {
        "begin": sbatch("--begin=now+300", "sleep 1"),
        "held": sbatch("--hold", "sleep 1"),
        "running": sbatch("", "sleep 120"),
    }
    deadline = time.monotonic() + 30
    while "RUNNING" not in ssh(f"squeue --noheader --format=%T --jobs={ids['running']}"):
        if time.monotonic() > deadline:
            raise SystemExit("the running job did not start")
        time.sleep(0.2)
    time.sleep(1.5)  # sacct knows all three
    command = status_command(sorted(ids.values()))
    parts = [f"### ids {' '.join(f'{k}={v}' for k, v in ids.items())}", f"### submitted {int(time.time())}"]
    parts += ["### live", ssh(command)]
    ssh("scancel " + " ".join(ids.values()))
    parts += ["### cancelled", ssh(command)]
    time.sleep(2)
    parts += ["### settled", ssh(command)]
    name = f"columns_{version.replace('.', '_')}.txt"
    (OUT / name).write_text("\n".join(parts))
    print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
