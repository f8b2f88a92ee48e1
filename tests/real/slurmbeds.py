"""The two Slurm test beds: 22.05 (tests/testbed/start.sh, Debian 12) and 24.11 (start24.sh, Debian
13's packages in a chroot). The `slurm_bed` fixture (tests/real/conftest.py) runs a test once on each
(ids `22.05` and `24.11`: `pytest -k 24.11` runs only the 24.11 half). Only the chosen Slurm-facing
tests take it: submit/wait/states and cancel (test_tracking_real), the sweep (test_sweep_real),
refusals, status columns and sync (test_slurm_versions_real), and what `sites check` records about
the Slurm and status's squeue that uses it (test_site_facts_real, ~8-14 s a bed).

How they were chosen: a test runs on both when what it checks comes from Slurm's own output or
behaviour, which changes between versions (sbatch's refusals, squeue/sacct states, reasons, exit
codes and times, arrays, cancel, accounting for sync). Tests of ssh, fetch, keys, profiles, the local
site, rendering and the library API reach Slurm only to have a job run: they run on 22.05 alone. The
24.11 half adds ~2.5 min on 2 cores (161 s measured: `pytest -m real -k "24.11 or lumi24" --durations=0`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import TEST_PROFILES

BED24_PROFILES = TEST_PROFILES / "bed24"  # lumi24-bed.yaml, testbed24.yaml
BED24_CLIENT = Path(os.environ.get("TESTBED24_CLIENT", "/tmp/testbed24/client"))
BED22_CLIENT = Path(os.environ.get("TESTBED_DIR", "/tmp/testbed")) / "client"


@dataclass(frozen=True)
class SlurmBed:
    version: str
    testbed: str  # tests/profiles/testbed.yaml, or its 24.11 twin tests/profiles/bed24/testbed24.yaml
    lumi: str  # the built-in lumi profile pointed at the bed (tests/profiles/bed, tests/profiles/bed24)
    ssh: tuple[str, ...]  # ssh to the bed's login node as hpcuser
    known_hosts: Path

    def env(self, env: dict[str, str]) -> dict[str, str]:
        """`env` (bed_env's or testbed_env's) with this bed's profiles searched first."""
        if self.version == "22.05":
            return env
        return {**env, "AIFACTORY_PROFILES": f"{BED24_PROFILES}{os.pathsep}{env.get('AIFACTORY_PROFILES', '')}"}

    def extra(self) -> dict[str, str]:
        """What `tb(..., env=...)` needs for this bed's profiles (nothing for 22.05)."""
        if self.version == "22.05":
            return {}
        return {"AIFACTORY_PROFILES": f"{BED24_PROFILES}{os.pathsep}{TEST_PROFILES}"}


BEDS = {
    "22.05": SlurmBed(
        "22.05",
        "testbed",
        "lumi-bed",
        ("ssh", "-F", str(BED22_CLIENT / "ssh_config"), "testbed"),
        BED22_CLIENT / "known_hosts",
    ),
    "24.11": SlurmBed(
        "24.11",
        "testbed24",
        "lumi24-bed",
        ("ssh", "-F", str(BED24_CLIENT / "ssh_config"), "testbed24"),
        BED24_CLIENT / "known_hosts",
    ),
}


def bed_of(nodeid: str) -> str:
    """The Slurm version a real-tier test ran against: 24.11 for the 24.11 halves (`[24.11]`, the
    sweep's `[lumi24-bed]`), 22.05 for every other real test (the 22.05 bed, or the local site)."""
    return "24.11" if "[24.11]" in nodeid or "[lumi24-bed]" in nodeid else "22.05"
