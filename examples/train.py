"""A small PyTorch DDP training loop (falls back to a dry run without PyTorch).

Written as PyTorch documents it, with nothing aifactory-specific: aifactory's launch contract gives
every task RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT (README, "The launch
contract"), and with the default gpu_binding (all) each task sees the node's GPUs and takes
cuda:LOCAL_RANK. Writes outputs/rank<N>.json.
"""

import argparse
import json
import os
import socket
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    node = os.environ.get("SLURMD_NODENAME", socket.gethostname())
    visible = {k: os.environ.get(k) for k in ("ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")}
    print(
        f"rank {rank}/{world} local {local_rank} on {node} "
        f"ROCR_VISIBLE_DEVICES={visible['ROCR_VISIBLE_DEVICES']} "
        f"CUDA_VISIBLE_DEVICES={visible['CUDA_VISIBLE_DEVICES']}",
        flush=True,
    )
    loss = None
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        torch = None
    if torch is not None and world > 1 and torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())  # per_task binding: device 0
        dist.init_process_group("nccl")  # env://; RCCL on ROCm
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(1024, 1024).cuda())
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        for _ in range(args.epochs):
            x = torch.randn(64, 1024, device="cuda")
            loss_t = model(x).square().mean()
            opt.zero_grad()
            loss_t.backward()
            opt.step()
            loss = float(loss_t)
        del model, opt  # before the process group goes: DDP holds it
        dist.destroy_process_group()
    out = Path("outputs")
    out.mkdir(exist_ok=True)
    (out / f"rank{rank}.json").write_text(
        json.dumps({"rank": rank, "node": node, "epochs": args.epochs, "loss": loss, **visible})
    )


if __name__ == "__main__":
    main()
