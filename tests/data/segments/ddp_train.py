"""A PyTorch DDP training (gloo, CPU) that runs across segments: STEPS optimizer steps of a small model
(SGD with momentum, so the optimizer's state matters too), each on data that depends only on the step
and the rank, STEP_SECONDS (default 0.1) of sleep each. On SIGUSR1 the ranks agree (an all-reduce of
their flags after each step) to stop after the same step; rank 0 saves model, optimizer and step to
$AIF_CHECKPOINT_DIR, and every rank exits 0. Started again, it resumes from there. At the end rank 0
saves the final state and prints `result <digest of the weights>`: an interrupted run must print what
an uninterrupted one does."""

import os
import signal
import sys

stop = False


def on_signal(signum, frame):
    global stop
    stop = True


# First, before the slow imports: aifactory starts torchrun with SIGUSR1 ignored (its agent would die
# of it), and the workers inherit that until they set a handler.
signal.signal(signal.SIGUSR1, on_signal)

import datetime as dt  # noqa: E402
import hashlib  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402


def main() -> int:
    steps = int(sys.argv[1])
    pause = float(os.environ.get("STEP_SECONDS", "0.1"))
    ckpt = os.path.join(os.environ["AIF_CHECKPOINT_DIR"], "ddp.pt")
    dist.init_process_group(backend="gloo", init_method="env://", timeout=dt.timedelta(seconds=120))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(1234)
    net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    model = nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    step, loss = 0, torch.tensor(0.0)
    if os.path.exists(ckpt):
        state = torch.load(ckpt, map_location="cpu")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, loss = state["step"], torch.tensor(state["loss"])
    seg, restarts = os.environ["AIF_SEGMENT"], os.environ["AIF_RESTARTS"]
    os.write(1, f"rank {rank}/{world} segment {seg} restarts {restarts} from step {step}\n".encode())
    while step < steps:
        time.sleep(pause)
        gen = torch.Generator().manual_seed(step * 1000 + rank)
        x = torch.randn(32, 8, generator=gen)
        y = torch.sin(x.sum(dim=1, keepdim=True))
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        step += 1
        flag = torch.tensor([1.0 if stop else 0.0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank stops after the same step
        if flag.item():
            if rank == 0:
                torch.save(
                    {"model": net.state_dict(), "opt": opt.state_dict(), "step": step, "loss": loss.item()},
                    ckpt + ".tmp",
                )
                os.replace(ckpt + ".tmp", ckpt)
                os.write(1, f"signalled: saved at step {step}\n".encode())
            dist.barrier()
            dist.destroy_process_group()
            return 0
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    in_sync = all(torch.equal(g, flat) for g in gathered)
    if rank == 0:
        # the final state too: a signal that comes while the program finishes makes the batch script
        # start one more segment, which must find the work done (and only print the result again)
        torch.save(
            {"model": net.state_dict(), "opt": opt.state_dict(), "step": step, "loss": loss.item()}, ckpt + ".tmp"
        )
        os.replace(ckpt + ".tmp", ckpt)
        digest = hashlib.sha256(flat.numpy().tobytes()).hexdigest()[:16]
        os.write(1, f"result {digest} loss {loss.item():.6f} world {world} in_sync {in_sync}\n".encode())
    dist.barrier()
    dist.destroy_process_group()
    return 0 if in_sync else 1


if __name__ == "__main__":
    code = main()
    # as tests/data/ddp/train.py: leave without the interpreter's finalization (gloo's threads can abort there)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
