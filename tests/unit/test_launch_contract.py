"""The launch contract (README, "The launch contract") executed: rendered Slurm scripts run under
stand-ins for srun, scontrol, getent, torchrun, module and the container runtimes, which do what
those tools do with the environment (srun starts every task with its SLURM_PROCID, SLURM_LOCALID,
SLURM_NODEID, ... and, like the sites' Slurm, the GPUs of the step in the visible-devices
variable). Each task writes what it sees; the tests read it back. The real thing (PyTorch DDP over
2 nodes of the test bed) is tests/real/test_ddp_real.py."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from aifactory_cli.sites.profile import load_profile
from aifactory_cli.sites.render import render
from aifactory_cli.sites.resolve import Overrides, resolve
from aifactory_cli.sites.userconfig import UserConfig
from aifactory_cli.spec.model import SpecError, load_spec_text

JOB_ID = 8812345
PORT = 10000 + JOB_ID % 20000
NODES = "nid005000,nid005001"
ACCOUNTS = {
    "lumi": "project_465000123",
    "jupiter": "exalab",
    "juwels-booster": "exalab",
    "leonardo": "EUHPC_A05_043",
    "marenostrum5": "ehpc191",
}
# what every task reports (one file per task); torchrun reports its argv and environment instead
REPORT = (
    'printf "%s\\n" "R=$RANK L=$LOCAL_RANK W=$WORLD_SIZE LW=$LOCAL_WORLD_SIZE N=$NODE_RANK '
    'M=$MASTER_ADDR:$MASTER_PORT ROCR=${ROCR_VISIBLE_DEVICES-} CUDA=${CUDA_VISIBLE_DEVICES-}" > "task.$SLURM_PROCID"'
)

SRUN = r"""#!/bin/bash
# srun: --nodes, --ntasks, then the command; every task gets the step's Slurm values
printf '%s\n' "$*" >> "$AIF_JOB_DIR/srun.args"
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes=*) nodes=${1#*=} ;;
    --ntasks=*) ntasks=${1#*=} ;;
    --*) ;;
    *) break ;;
  esac
  shift
done
IFS=, read -r -a names <<< "$SLURM_JOB_NODELIST"
per=$(( ntasks / nodes ))
pids=()
for (( t = 0; t < ntasks; t++ )); do
  n=$(( t / per ))
  (
    export SLURM_PROCID=$t SLURM_LOCALID=$(( t % per )) SLURM_NODEID=$n SLURM_NTASKS=$ntasks
    export SLURM_NNODES=$nodes SLURMD_NODENAME=${names[$n]}
    # the step's GPUs on the node, as Slurm lists them (FAKE_STEP_GPUS: VAR=LIST), or one per
    # task as JSC's Slurm does (FAKE_PIN_GPUS: VAR)
    if [ -n "${FAKE_STEP_GPUS:-}" ]; then export "${FAKE_STEP_GPUS?}"; fi
    if [ -n "${FAKE_PIN_GPUS:-}" ]; then export "$FAKE_PIN_GPUS=$SLURM_LOCALID"; fi
    exec "$@"
  ) &
  pids+=("$!")
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
"""
SCONTROL = """#!/bin/bash
[ "$1 $2" = "show hostnames" ] && tr , '\\n' <<< "$3"
"""
# getent ahostsv4: JSC-style InfiniBand names (<node>i) resolve when FAKE_IB is set
GETENT = """#!/bin/bash
case "$2" in
  nid005000i) [ -n "${FAKE_IB:-}" ] && echo "10.9.0.1      STREAM nid005000i" && exit 0 ;;
  nid005001i) [ -n "${FAKE_IB:-}" ] && echo "10.9.0.2      STREAM nid005001i" && exit 0 ;;
esac
exit 2
"""
TORCHRUN = """#!/bin/bash
printf '%s\\n' "ARGS=$*" "NODE_RANK=$NODE_RANK" "CUDA=${CUDA_VISIBLE_DEVICES-}" "ROCR=${ROCR_VISIBLE_DEVICES-}" \\
  > "$AIF_JOB_DIR/torchrun.$SLURM_NODEID"
"""
# singularity/apptainer exec [OPTIONS] IMAGE COMMAND...: record the options, run the command
RUNTIME = """#!/bin/bash
printf '%s\\n' "$*" > "$AIF_JOB_DIR/container.$SLURM_PROCID"
shift
while [ "$1" != /images/pytorch.sif ]; do shift; done
shift
exec "$@"
"""
MODULE = """#!/bin/bash
printf '%s\\n' "$*" >> "$AIF_JOB_DIR/module.log"
"""


def _script(text: str, site: str) -> str:
    spec = load_spec_text(text).for_site(site)
    job = resolve(spec, load_profile(site), UserConfig(), Overrides(account=ACCOUNTS.get(site)))
    return render(job, "0" * 32, "00000000").script


def _run(tmp: Path, script: str, **env: str) -> Path:
    """Run `script` as a batch script of job JOB_ID on two nodes; returns its job dir."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    tools = {
        "srun": SRUN,
        "scontrol": SCONTROL,
        "getent": GETENT,
        "torchrun": TORCHRUN,
        "singularity": RUNTIME,
        "apptainer": RUNTIME,
        "module": MODULE,
    }
    for name, text in tools.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    job_dir = tmp / "job"
    job_dir.mkdir()
    (job_dir / "job.sh").write_text(script)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "ROCR_", "CUDA_", "MASTER_"))}
    full.update(PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_SUBMIT_DIR=str(job_dir), SLURM_JOB_ID=str(JOB_ID))
    full.update(SLURM_JOB_NODELIST=NODES, **env)
    proc = subprocess.run(["bash", "job.sh"], cwd=job_dir, env=full, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return job_dir


def _tasks(job_dir: Path) -> list[dict[str, str]]:
    out = []
    for path in sorted(job_dir.glob("task.*"), key=lambda p: int(p.suffix[1:])):
        out.append(dict(word.split("=", 1) for word in path.read_text().split()))
    return out


def _torchrun(job_dir: Path, node: int) -> dict[str, str]:
    lines = (job_dir / f"torchrun.{node}").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


TWO_NODES = "name: ddp\nrun: {run}\nresources: {{nodes: 2, gpus_per_node: {gpus}, time: 1h{extra}}}\n"


def _two_nodes(gpus: str = "all", extra: str = "", run: str = REPORT) -> str:
    return TWO_NODES.format(run=shlex.quote(run), gpus=gpus, extra=extra)


# --- srun -------------------------------------------------------------------------------------------


def test_every_srun_task_gets_the_contract_from_its_step(tmp_path: Path) -> None:
    """LUMI, 2 nodes x 8 GCDs, gpu_binding all (the default): the PyTorch recipe of the LUMI AI
    Guide (LOCAL_RANK from the environment, torch.cuda.set_device(local_rank)) finds its values."""
    tasks = _tasks(_run(tmp_path, _script(_two_nodes(), "lumi")))
    assert len(tasks) == 16
    for rank, task in enumerate(tasks):
        assert task["R"] == str(rank) and task["L"] == str(rank % 8) and task["N"] == str(rank // 8)
        assert (task["W"], task["LW"]) == ("16", "8")
        assert task["M"] == f"nid005000:{PORT}"
        assert task["ROCR"] == "0,1,2,3,4,5,6,7"  # every GCD of the node: set_device(LOCAL_RANK) works
    srun = (tmp_path / "job" / "srun.args").read_text()
    # LUMI's documented 7-core masks, in this binding as in the other
    assert "--cpu-bind=mask_cpu:fe000000000000,fe00000000000000,fe0000,fe000000" in srun


def test_lumi_per_task_binding_gives_task_i_gcd_i_and_leaves_no_wrapper_file(tmp_path: Path) -> None:
    script = _script(_two_nodes(extra=", gpu_binding: per_task"), "lumi")
    job_dir = _run(tmp_path, script, FAKE_STEP_GPUS="ROCR_VISIBLE_DEVICES=0,1,2,3,4,5,6,7")
    tasks = _tasks(job_dir)
    assert [t["ROCR"] for t in tasks] == [str(i % 8) for i in range(16)]
    assert "--cpu-bind=mask_cpu:fe000000000000" in (job_dir / "srun.args").read_text()
    left = sorted(p.name for p in job_dir.iterdir() if not p.name.startswith("task."))
    assert left == ["aif_port", "exit_code", "job.sh", "module.log", "srun.args"]  # module.log: the stand-in `module`


def test_per_task_takes_the_gpus_slurm_gave_a_sub_node_job(tmp_path: Path) -> None:
    """small-g: 2 GCDs of a shared node, which Slurm lists as 4,5: task 0 gets 4, task 1 gets 5."""
    text = "name: two\nrun: {}\nresources: {{gpus_per_node: 2, time: 1h, gpu_binding: per_task}}\n"
    script = _script(text.format(shlex.quote(REPORT)), "lumi")
    assert "--partition=small-g" in script
    tasks = _tasks(_run(tmp_path, script, FAKE_STEP_GPUS="ROCR_VISIBLE_DEVICES=4,5"))
    assert [(t["R"], t["ROCR"], t["W"]) for t in tasks] == [("0", "4", "2"), ("1", "5", "2")]


def test_several_gpus_per_task_get_their_share(tmp_path: Path) -> None:
    script = _script(_two_nodes(extra=", tasks_per_node: 2, gpu_binding: per_task"), "lumi")
    tasks = _tasks(_run(tmp_path, script))
    assert [t["ROCR"] for t in tasks] == ["0,1,2,3", "4,5,6,7", "0,1,2,3", "4,5,6,7"]


def test_jsc_all_binding_undoes_slurms_one_gpu_per_task(tmp_path: Path) -> None:
    """JUPITER: Slurm shows each task only its own GPU; gpu_binding all shows it the node's four
    ("Please manually export CUDA_VISIBLE_DEVICES=0,1,2,3", JUPITER gpu-computing docs)."""
    tasks = _tasks(_run(tmp_path, _script(_two_nodes(), "jupiter"), FAKE_PIN_GPUS="CUDA_VISIBLE_DEVICES"))
    assert [t["CUDA"] for t in tasks] == ["0,1,2,3"] * 8
    assert [t["R"] for t in tasks] == [str(i) for i in range(8)]
    pinned = _tasks(
        _run(
            tmp_path / "p",
            _script(_two_nodes(extra=", gpu_binding: per_task"), "jupiter"),
            FAKE_PIN_GPUS="CUDA_VISIBLE_DEVICES",
        )
    )
    assert [t["CUDA"] for t in pinned] == ["0", "1", "2", "3"] * 2


def test_cpu_job_gets_the_contract_too(tmp_path: Path) -> None:
    text = "name: sim\nrun: {}\nresources: {{nodes: 2, tasks_per_node: 3, time: 1h}}\n"
    tasks = _tasks(_run(tmp_path, _script(text.format(shlex.quote(REPORT)), "lumi")))
    assert [(t["R"], t["L"], t["N"], t["W"], t["LW"]) for t in tasks] == [
        (str(r), str(r % 3), str(r // 3), "6", "3") for r in range(6)
    ]
    assert all(t["CUDA"] == "" for t in tasks)


def test_the_port_comes_from_the_job_id(tmp_path: Path) -> None:
    script = _script(_two_nodes(gpus="0"), "lumi")
    first = _tasks(_run(tmp_path / "a", script))[0]["M"]
    other = _run(tmp_path / "b", script, SLURM_JOB_ID=str(JOB_ID + 1))
    assert first == f"nid005000:{PORT}" and _tasks(other)[0]["M"] == f"nid005000:{PORT + 1}"
    assert 10000 <= PORT < 30000


def test_the_users_master_addr_and_port_win(tmp_path: Path) -> None:
    text = _two_nodes(gpus="0") + "env: {MASTER_PORT: '29400', MASTER_ADDR: nid005001}\n"
    tasks = _tasks(_run(tmp_path, _script(text, "lumi")))
    assert {t["M"] for t in tasks} == {"nid005001:29400"}
    torch = _script(text.replace(f"run: {REPORT!r}", "run: train.py") + "launcher: torchrun\n", "lumi")
    assert '--rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT"' in torch and "export MASTER_PORT=$((" not in torch


def test_launcher_none_one_task_is_rank_0_of_1(tmp_path: Path) -> None:
    text = "name: one\nlauncher: none\nrun: {}\nresources: {{gpus_per_node: all, tasks_per_node: 1, time: 1h}}\n"
    job_dir = _run(tmp_path, _script(text.format(shlex.quote(REPORT.replace("$SLURM_PROCID", "0"))), "jupiter"))
    task = _tasks(job_dir)[0]
    assert (task["R"], task["L"], task["W"], task["LW"], task["N"]) == ("0", "0", "1", "1", "0")
    assert task["M"] == f"nid005000:{PORT}" and task["CUDA"] == "0,1,2,3"
    assert not (job_dir / "srun.args").exists()


def test_launcher_none_with_several_tasks_leaves_ranks_to_the_runs_launcher() -> None:
    text = "name: own\nlauncher: none\nrun: srun ./app\nresources: {nodes: 2, time: 1h}\n"
    script = _script(text, "lumi")
    assert "export MASTER_PORT=" in script and "RANK=" not in script


# --- torchrun ---------------------------------------------------------------------------------------


TORCH = "name: ddp\nrun: train.py --epochs 3\nlauncher: torchrun\nresources: {nodes: 2, gpus_per_node: all, time: 1h}\n"


def test_torchrun_store_host_comes_from_the_node_id(tmp_path: Path) -> None:
    job_dir = _run(tmp_path, _script(TORCH, "lumi"))
    for node in (0, 1):
        seen = _torchrun(job_dir, node)
        args = seen["ARGS"].split()
        assert f"--rdzv-conf=is_host={1 if node == 0 else 0}" in args
        assert f"--rdzv-endpoint=nid005000:{PORT}" in args and f"--rdzv-id={JOB_ID}" in args
        assert "--nnodes=2" in args and "--nproc-per-node=8" in args
        assert f"--local-addr=nid00500{node}" in args
        assert args[-3:] == ["train.py", "--epochs", "3"]
        assert seen["NODE_RANK"] == str(node) and seen["ROCR"] == "0,1,2,3,4,5,6,7"
    srun = (job_dir / "srun.args").read_text()
    assert srun.startswith("--nodes=2 --ntasks=2 --ntasks-per-node=1 --cpus-per-task=56 ")


def test_torchrun_on_jsc_uses_the_infiniband_names(tmp_path: Path) -> None:
    """JUWELS Booster: the rendezvous host is the first node's `…i` name, resolved as the JSC course
    does; each agent's --local-addr is its own `…i` address (torchrun_jsc's --local_addr fix)."""
    job_dir = _run(tmp_path, _script(TORCH, "juwels-booster"), FAKE_IB="1", FAKE_PIN_GPUS="CUDA_VISIBLE_DEVICES")
    for node in (0, 1):
        seen = _torchrun(job_dir, node)
        args = seen["ARGS"].split()
        assert f"--rdzv-endpoint=10.9.0.1:{PORT}" in args and f"--local-addr=10.9.0.{node + 1}" in args
        assert f"--rdzv-conf=is_host={1 if node == 0 else 0}" in args
        assert seen["CUDA"] == "0,1,2,3"  # one task per node sees all four GPUs (JSC docs)
    # a JSC node without an InfiniBand name (JUPITER: not in the sources) keeps its own name
    plain = _run(tmp_path / "plain", _script(TORCH, "jupiter"))
    assert f"--rdzv-endpoint=nid005000:{PORT}" in _torchrun(plain, 0)["ARGS"].split()


def test_torchrun_refuses_per_task_binding() -> None:
    with pytest.raises(SpecError, match="gpu_binding: all"):
        load_spec_text(TORCH.replace("time: 1h", "time: 1h, gpu_binding: per_task"))


# --- containers -------------------------------------------------------------------------------------


CONTAINER = (
    "name: ctr\nrun: {run}\nresources: {{gpus_per_node: all, time: 1h}}\n"
    "container: {{image: /images/pytorch.sif, bind: [/data/x], options: [{opt}]}}\n"
)


def _container(site: str, opt: str = "--cleanenv") -> str:
    return _script(CONTAINER.format(run=shlex.quote(REPORT), opt=opt), site)


def test_the_contract_reaches_inside_the_container_on_lumi(tmp_path: Path) -> None:
    job_dir = _run(tmp_path, _container("lumi"))
    tasks = _tasks(job_dir)
    assert [(t["R"], t["L"], t["W"], t["ROCR"]) for t in tasks] == [
        (str(r), str(r), "8", "0,1,2,3,4,5,6,7") for r in range(8)
    ]
    words = (job_dir / "container.0").read_text().split()
    # no --nv or --rocm: ROCm images bring their own ROCm; the job dir is bound, the spec's binds too;
    # the project dirs are bound only where they exist (none here)
    assert words[:7] == ["exec", "--cleanenv", "--bind", str(job_dir), "--bind", "/data/x", "/images/pytorch.sif"]
    assert words[7:9] == ["bash", "-c"]
    assert (job_dir / "module.log").read_text().splitlines()[-2:] == [
        "use /appl/local/laifs/modules",
        "load lumi-aif-singularity-bindings",
    ]


def test_lumi_binds_the_project_dirs_by_their_full_paths() -> None:
    script = _container("lumi")
    assert "for _aif_dir in /scratch/project_465000123 /project/project_465000123; do" in script


@pytest.mark.parametrize("site", ["leonardo", "marenostrum5", "jupiter"])
def test_nvidia_containers_get_nv_once(site: str, tmp_path: Path) -> None:
    job_dir = _run(tmp_path, _container(site, opt="--nv"))
    words = (job_dir / "container.0").read_text().split()
    assert words.count("--nv") == 1 and words[:2] == ["exec", "--nv"]
    assert words[words.index("--bind") + 1] == str(job_dir)
    assert _tasks(job_dir)[0]["CUDA"] == "0,1,2,3"
