"""The unmodified DDP program (tests/data/ddp/train.py) trains INSIDE a container on the test bed,
2 nodes x 2 tasks, with `launcher: srun` and `launcher: torchrun`, as LUMI and as JUPITER.

The bed has no container runtime, so a stub stands in for one (tests/testbed/stub_runtime.py,
installed by start.sh as `singularity` and `apptainer`, on PATH after `module load aif-stub-runtime`):
it accepts only `exec [options...] IMAGE COMMAND...` (an unknown option, a missing image or a bind
source that does not exist fail the job, as the real runtime does), records each task's argv,
environment and ranks in the job dir, and execs the command in the same process. So the training
below runs where the container's command runs, with exactly the arguments the site's script gave
the runtime, and the test checks those arguments:

- the runtime of the site (LUMI `singularity`, JUPITER `apptainer`) and its GPU flag: `--nv`
  exactly once on JUPITER (NVIDIA), no GPU flag on LUMI (AMD: ROCm images need none);
- the job dir bound; the spec's `container.bind` entries arrive as one `--bind` word;
- LUMI: `/scratch/<project>` bound by its full path (it exists on the bed), `/project/<project>`
  only if it exists; the bindings module that the bed lacks is a warning, not a failure;
- the launch contract (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, ...) reaches the
  command inside, and for srun each rank is the very process the runtime started for its task.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.real.bedjobs import TORCH_VENV, Submitted, bed_env, submit_all
from tests.real.test_ddp_real import PROGRAM

pytestmark = pytest.mark.real
STUB_BIN = Path(os.environ.get("TESTBED_STUB_RUNTIME", "/opt/aif-stub-runtime")) / "bin"
CONTRACT = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
GPU_FLAGS = {"--nv", "--nvccli", "--rocm"}
IMAGE = "ddp.sif"  # uploaded into the job dir; the stub refuses an image that does not exist
LUMI_BINDINGS_WARNING = "module lumi-aif-singularity-bindings did not load"


@dataclass(frozen=True)
class Case:
    site: str
    account: str
    runtime: str
    gpu_flags: tuple[str, ...]  # what the site's runtime must get: NVIDIA --nv, AMD nothing
    launcher: str
    nodes: int = 2
    per_node: int = 2

    @property
    def name(self) -> str:
        return f"{self.site}-{self.launcher}"

    def spec(self, binds: list[str]) -> str:
        spec = {
            "name": f"ctr-{self.name}",
            "resources": {"nodes": self.nodes, "gpus_per_node": self.per_node, "time": "10m"},
            "modules": ["pytorch/2.13.0-cpu", "aif-stub-runtime"],
            "env": {"OMP_NUM_THREADS": "1"},
            "container": {"image": IMAGE, "bind": binds},
            "run": "python3 train.py" if self.launcher == "srun" else "train.py",
            "launcher": self.launcher,
            "upload": ["train.py", IMAGE],
        }
        return json.dumps(spec, indent=1)  # JSON is YAML; quoting of the paths is json's


CASES = [
    Case("lumi-bed", "project_465000001", "singularity", (), "srun"),
    Case("lumi-bed", "project_465000001", "singularity", (), "torchrun"),
    Case("jupiter-bed", "exalab", "apptainer", ("--nv",), "srun"),
    Case("jupiter-bed", "exalab", "apptainer", ("--nv",), "torchrun"),
]


@pytest.fixture(scope="module")
def bind_source() -> Iterator[str]:
    """A data directory for `container.bind`, with a space in its name (it must stay one word),
    readable by the test user (the stub checks that a bind source exists)."""
    path = tempfile.mkdtemp(prefix="aif ctr data ", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def container_jobs(tmp_path_factory: pytest.TempPathFactory, bind_source: str) -> dict[str, Submitted]:
    if not (TORCH_VENV / ".testbed-installed").is_file():
        pytest.fail(f"no PyTorch in {TORCH_VENV}: tests/testbed/start.sh installs it (log: /tmp/testbed/log/torch.out)")
    for rt in ("singularity", "apptainer"):
        if not os.access(STUB_BIN / rt, os.X_OK):
            pytest.fail(f"no stub container runtime {STUB_BIN / rt}: tests/testbed/start.sh installs it")
    tmp = tmp_path_factory.mktemp("container")
    shutil.copy(PROGRAM, tmp / "train.py")
    (tmp / IMAGE).write_text("not a real image: the bed's stub runtime checks only that it exists\n")
    binds = [f"{bind_source}:/data:ro", bind_source]
    subs = []
    for case in CASES:
        (tmp / f"{case.name}.yaml").write_text(case.spec(binds))
        subs.append(Submitted(case.name, case.site, [f"{case.name}.yaml", "-A", case.account]))
    return {s.case: s for s in submit_all(subs, bed_env(tmp), tmp, wait_s=300)}


def _records(sub: Submitted) -> list[dict]:
    where = sub.workdir / "aif-stub-runtime"
    files = sorted(where.glob("*.json")) if where.is_dir() else []
    return [json.loads(f.read_text()) for f in files]


def _result(sub: Submitted) -> dict:
    assert sub.job, sub.explain()
    errors = [r["error"] for r in _records(sub) if r["error"]]
    assert not errors, f"the stub runtime refused its arguments: {errors}\n{sub.explain()}"
    assert (sub.job["state"], sub.job["exit_code"]) == ("COMPLETED", 0), sub.explain()
    path = sub.workdir / "ddp_result.json"
    assert path.is_file(), f"rank 0 wrote no {path.name}: {sub.explain()}"
    return json.loads(path.read_text())


def _bind_words(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, w in enumerate(argv[:-1]) if w in ("--bind", "-B")]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_ddp_trains_inside_the_container_with_the_sites_flags_and_binds(
    container_jobs: dict[str, Submitted], case: Case, bind_source: str
) -> None:
    sub = container_jobs[case.name]
    res = _result(sub)
    records = _records(sub)
    world = case.nodes * case.per_node
    print(  # shown with -s
        f"{case.name}: {case.runtime} x{len(records)}, world {res['world_size']}, ranks per node "
        f"{res['ranks_per_node']}, all-reduce sum {res['allreduce_sum']}, weights in sync {res['weights_in_sync']}, "
        f"argv {records[0]['argv'][:-1] if records else None} ..."
    )

    # the training: every rank joined, the all-reduce is right, the weights agree after a step
    assert res["world_size"] == world and [r["rank"] for r in res["ranks"]] == list(range(world)), res
    assert res["allreduce_sum"] == world * (world - 1) // 2, res
    assert res["weights_in_sync"] and res["max_weight_diff"] == 0.0 and res["weights_changed_from_init"], res
    assert len(res["hosts"]) == 2 and res["ranks_per_node"] == dict.fromkeys(res["hosts"], case.per_node), res

    # one runtime call per task (srun) or per node (torchrun's agent), each the site's runtime
    assert len(records) == (world if case.launcher == "srun" else case.nodes), [r["argv"] for r in records]
    for rec in records:
        argv, parsed = rec["argv"], rec["parsed"]
        assert rec["runtime"] == case.runtime and argv[:2] == [case.runtime, "exec"], argv
        # the GPU flag of the site: --nv exactly once on JUPITER, none on LUMI
        flags = [w for w in argv if w in GPU_FLAGS]
        assert flags == list(case.gpu_flags), f"{case.site}: GPU flags {flags} in {argv}"
        assert parsed["image"] == IMAGE, parsed
        assert parsed["command"][:2] == ["bash", "-c"] and parsed["command"][2].endswith("train.py"), parsed
        # binds: first the site's (job dir; LUMI: the project dirs that exist), then the spec's as one word
        words = _bind_words(argv)
        assert len(words) == 2, f"expected the site's --bind and the spec's --bind: {argv}"
        site_binds, spec_bind = words[0].split(","), words[1]
        assert spec_bind == f"{bind_source}:/data:ro,{bind_source}", argv
        assert str(sub.workdir) in site_binds, f"job dir {sub.workdir} not bound: {site_binds}"
        expected = [str(sub.workdir)]
        if case.site.startswith("lumi"):
            project_dirs = [f"/scratch/{case.account}", f"/project/{case.account}"]
            assert os.path.isdir(project_dirs[0]), "the bed has no /scratch/<project> (tests/testbed/start.sh)"
            expected = [d for d in project_dirs if os.path.isdir(d)] + expected
        assert site_binds == expected, f"{case.site}: bound {site_binds}, expected {expected}"
        # the launch contract, as the runtime received it (torchrun's workers get their ranks from torchrun)
        given = CONTRACT if case.launcher == "srun" else ("NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
        assert all(rec["ranks"][k] is not None for k in given), rec["ranks"]
        if case.launcher == "srun":
            assert rec["ranks"]["RANK"] == rec["ranks"]["SLURM_PROCID"], rec["ranks"]
            assert rec["ranks"]["WORLD_SIZE"] == str(world), rec["ranks"]

    # inside: every rank saw the contract, and (srun) each rank is the process its runtime call became
    for r in res["ranks"]:
        assert all(r["env"][k] is not None for k in CONTRACT), r
        assert r["env"]["RANK"] == str(r["rank"]) and r["env"]["WORLD_SIZE"] == str(world), r
        assert r["env"]["LOCAL_RANK"] == str(r["local_rank"]), r
    if case.launcher == "srun":
        by_rank = {rec["ranks"]["RANK"]: rec for rec in records}
        for r in res["ranks"]:
            rec = by_rank[str(r["rank"])]
            assert rec["pid"] == r["pid"] and rec["ranks"]["SLURMD_NODENAME"] == r["node"], (rec["ranks"], r)
            assert {k: rec["ranks"][k] for k in CONTRACT} == r["env"], (rec["ranks"], r["env"])
    else:  # one agent per node, on the two nodes
        assert sorted(rec["ranks"]["NODE_RANK"] for rec in records) == ["0", "1"], [rec["ranks"] for rec in records]

    # LUMI loads the AI Factory bindings module; where it is missing (the bed) that is only a warning
    stderr = sub.text("stderr.log")
    missing = not Path("/appl/local/laifs/modules/lumi-aif-singularity-bindings").exists()
    assert (LUMI_BINDINGS_WARNING in stderr) == (case.site.startswith("lumi") and missing), stderr[-2000:]


STUB = Path(__file__).resolve().parents[1] / "testbed" / "stub_runtime.py"


@pytest.mark.parametrize(
    ("args", "refusal"),
    [
        (["run", "IMG", "true"], "runs only `exec`"),
        (["exec", "--bogus", "IMG", "true"], "unknown flag: --bogus"),
        (["exec", "--nv"], "no image"),
        (["exec", "--nv", "IMG"], "no command after the image"),
        (["exec", "/no/such.sif", "true"], "could not open image /no/such.sif"),
        (["exec", "--bind", "/no/such/dir:/data", "IMG", "true"], "mount source /no/such/dir doesn't exist"),
        (["exec", "-B", "relative:/data", "IMG", "true"], "must be an absolute path"),
        (["exec", "--bind"], "flag needs an argument"),
        (["exec", "--bind=/:/x:rx", "IMG", "true"], "unknown bind option 'rx'"),
        (["exec", "-B", "/tmp", "--nv", "--bind=/:/host:ro", "IMG", "true"], None),
    ],
)
def test_the_stub_runtime_refuses_what_the_real_one_refuses(
    tmp_path: Path, args: list[str], refusal: str | None
) -> None:
    """The stub that the container jobs above pass through fails loudly on a wrong shape, so a
    template that rendered one would fail those jobs; a right one runs its command."""
    (tmp_path / "IMG").write_text("image\n")
    env = {**os.environ, "AIF_JOB_DIR": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-I", str(STUB), *[a.replace("IMG", str(tmp_path / "IMG")) for a in args]],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=30,
    )
    (rec,) = [json.loads(p.read_text()) for p in (tmp_path / "aif-stub-runtime").glob("*.json")]
    if refusal is None:
        assert r.returncode == 0 and rec["error"] is None, r.stderr
        assert rec["parsed"]["binds"] == ["/tmp", "/:/host:ro"] and rec["parsed"]["command"] == ["true"], rec
    else:
        assert r.returncode == 255 and r.stderr.startswith("FATAL:") and refusal in r.stderr, r.stderr
        assert refusal in rec["error"], rec
