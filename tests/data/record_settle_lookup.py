"""Record the settle lookup (service/settle.py `lookup_command`) on the test bed, for test_settle.py.

Run with the test bed up:  python3 tests/data/record_settle_lookup.py   (~5 s)
Four interrupted submissions, one job dir each (relative to $HOME, as the stored workdirs are):
`marked` (queued, held, its slurm_job_id file written), `token_only` (queued, held, no file: only
the token in squeue's comment tells), `sacct_only` (queued with no aifactory comment and ended:
only sacct's WorkDir tells) and `never` (a job dir, nothing queued). Writes
tests/data/slurm/settle_lookup.txt (the command's stdout) and settle_lookup_jobs.json.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from aifactory_cli.jobs.model import Job, now_iso
from aifactory_cli.service.settle import lookup_command

OUT = Path(__file__).resolve().parent / "slurm"
SSH = ["ssh", "-F", "/tmp/testbed/client/ssh_config", "testbed"]
SCRIPT = "#!/bin/bash\n#SBATCH --account=project_465000001\n#SBATCH --output=/dev/null\n#SBATCH --time=5\n"


def ssh(command: str, stdin: str | None = None) -> str:
    r = subprocess.run([*SSH, command], input=stdin, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{command} failed: {r.stderr}")
    return r.stdout


def main() -> None:
    base = f"aif-settle-rec-{uuid.uuid4().hex[:6]}"
    jobs: dict[str, dict[str, str]] = {}
    for label, options, mark in [
        ("marked", "--hold --comment=aifactory:TOKEN", True),
        ("token_only", "--hold --comment=aifactory:TOKEN", False),
        ("sacct_only", "", False),
        ("never", None, False),
    ]:
        token, workdir = uuid.uuid4().hex, f"{base}/{label}"
        submit = "true"
        if options is not None:
            submit = f"_i=$(sbatch --parsable {options.replace('TOKEN', token)}) && echo $_i"
            submit += " && echo $_i > slurm_job_id" if mark else ""
        sid = ssh(f"mkdir -p {workdir} && cd {workdir} && {submit}", SCRIPT + "sleep 1\n").strip()
        jobs[label] = {"token": token, "workdir": workdir, "sbatch": sid}
    time.sleep(8)  # sacct_only has ended, and slurmdbd knows it
    since = (dt.datetime.now() - dt.timedelta(minutes=2)).isoformat(timespec="seconds")
    records = []
    for i, (label, v) in enumerate(jobs.items()):
        v["id"] = f"{i:08x}"
        records.append(
            Job(
                id=v["id"],
                token=v["token"],
                name=label,
                site="testbed",
                state="UNKNOWN",
                created_at=since,
                updated_at=now_iso(),
                workdir=v["workdir"],
            )
        )
    text = ssh(lookup_command(records, "slurm"))
    held = [v["sbatch"] for v in jobs.values() if v["sbatch"]][:2]
    ssh(f"scancel {' '.join(held)}; rm -rf {base}")
    (OUT / "settle_lookup.txt").write_text(text)
    (OUT / "settle_lookup_jobs.json").write_text(json.dumps(jobs, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
