"""Slurm output recorded from the test beds by tests/data/record_slurm_output.py, one folder per
Slurm version (tests/data/slurm/22.05/, tests/data/slurm/24.11/): the parser tests run on each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aifactory_cli.scheduler import slurm

SLURM_DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"
# every folder the recorder wrote (it leaves the full version in version.txt)
VERSIONS = sorted(p.name for p in SLURM_DATA.iterdir() if (p / "version.txt").is_file())


def since(version: str, first: str) -> bool:
    """Whether `version` ("24.11") is `first` ("23.02") or later."""
    return tuple(map(int, version.split("."))) >= tuple(map(int, first.split(".")))


@dataclass(frozen=True)
class Recording:
    """The recordings of one Slurm version."""

    version: str

    @property
    def dir(self) -> Path:
        return SLURM_DATA / self.version

    def text(self, name: str) -> str:
        return (self.dir / name).read_text()

    def ids(self, name: str = "ids.txt") -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.text(name).split())

    def sacct(self, name: str) -> dict[tuple[str, int | None], slurm.SlurmRow]:
        return slurm.latest_rows(slurm.parse_sacct(self.text(name)))

    def rejections(self) -> dict[str, tuple[int, str]]:
        """{label: (sbatch's exit code, its stderr)} of sbatch_rejected.txt."""
        out = {}
        for block in self.text("sbatch_rejected.txt").split("### ")[1:]:
            head, _, body = block.partition("\n")
            label, rc = head.split(" rc=")
            out[label] = (int(rc), body)
        return out
