"""A plain PyTorch DDP program, written the way PyTorch's docs and the LUMI AI Guide write one.

It knows nothing of aifactory or Slurm: env:// initialisation (RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT from the environment), `local_rank = int(os.environ["LOCAL_RANK"])`, the gloo backend
on the CPU. Started by srun (one process per task) or by torchrun, it checks that

- every rank joined (each rank's identity is gathered on every rank),
- an all-reduce of the ranks gives 0 + 1 + ... + (world size - 1),
- after one optimizer step of a tiny DistributedDataParallel model, fed different data on every
  rank, the weights are identical on every rank (the gradients were averaged).

Rank 0 writes what it saw to a JSON file (default `ddp_result.json` in the working directory) and
every rank prints one line. The exit code is 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import sys

import torch
import torch.distributed as dist
from torch import nn

# What the launch contract promises every task; recorded as each rank saw it.
CONTRACT = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
# Which devices the task was given (fake GPUs on the test bed; nothing here uses them).
VISIBILITY = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")


def node_name() -> str:
    # Every "node" of a one-machine test bed has the machine's host name; Slurm names the node.
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="ddp_result.json", help="where rank 0 writes its JSON result")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for init and collectives")
    args = parser.parse_args()

    local_rank = int(os.environ["LOCAL_RANK"])  # as in the LUMI AI Guide and PyTorch's DDP tutorial
    dist.init_process_group(backend="gloo", init_method="env://", timeout=dt.timedelta(seconds=args.timeout))
    rank, world = dist.get_rank(), dist.get_world_size()

    # 1. Every rank joined: gather each rank's identity and environment.
    me = {
        "rank": rank,
        "local_rank": local_rank,
        "node": node_name(),
        "pid": os.getpid(),
        "env": {k: os.environ.get(k) for k in CONTRACT},
        "visible": {k: os.environ[k] for k in VISIBILITY if k in os.environ},
        "launcher": "torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else "srun",
    }
    everyone: list[dict] = [{} for _ in range(world)]
    dist.all_gather_object(everyone, me)

    # 2. All-reduce of the ranks.
    total = torch.tensor([float(rank)])
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    expected = world * (world - 1) // 2

    # 3. One step of a tiny DDP model; each rank sees its own data, so only averaged gradients
    #    leave the weights equal everywhere.
    torch.manual_seed(1234)
    model = nn.parallel.DistributedDataParallel(nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()
    gen = torch.Generator().manual_seed(1000 + rank)
    x, y = torch.randn(16, 8, generator=gen), torch.randn(16, 2, generator=gen)
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    max_diff = max(float((g - gathered[0]).abs().max()) for g in gathered)
    moved = float((flat - before).abs().max())  # the step did change the weights

    ranks_per_node: dict[str, int] = {}
    local_ranks: dict[str, list[int]] = {}
    for r in everyone:
        ranks_per_node[r["node"]] = ranks_per_node.get(r["node"], 0) + 1
        local_ranks.setdefault(r["node"], []).append(r["local_rank"])
    ok = (
        sorted(r["rank"] for r in everyone) == list(range(world))
        and int(total.item()) == expected
        and max_diff == 0.0
        and moved > 0.0
    )
    line = (
        f"ddp rank={rank}/{world} local_rank={local_rank} node={me['node']} "
        f"sum={int(total.item())} expected={expected} max_weight_diff={max_diff} ok={ok}\n"
    )
    os.write(1, line.encode())  # one write per line: the ranks share one output file
    if rank == 0:
        result = {
            "world_size": world,
            "backend": dist.get_backend(),
            "torch": torch.__version__,
            "hosts": sorted(ranks_per_node),
            "ranks_per_node": ranks_per_node,
            "local_ranks": {k: sorted(v) for k, v in local_ranks.items()},
            "allreduce_sum": int(total.item()),
            "expected_sum": expected,
            "max_weight_diff": max_diff,
            "weights_in_sync": max_diff == 0.0,
            "weights_changed_from_init": moved > 0.0,
            "loss": float(loss.item()),
            "ranks": sorted(everyone, key=lambda r: r["rank"]),
            "ok": ok,
        }
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1, sort_keys=True)
        os.replace(tmp, args.out)
    dist.barrier()
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    code = main()
    # Leave without the interpreter's finalization: gloo's worker threads can abort the process there
    # ("terminate called without an active exception", SIGABRT) after every check passed and the
    # process group was destroyed, a PyTorch issue (pytorch/pytorch#190489, #179291) seen on the
    # test bed now and then when many ranks share 2 cores. Output is flushed first.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
