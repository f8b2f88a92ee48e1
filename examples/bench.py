"""Matrix-multiply throughput on the GPU this task was given (PyTorch, CUDA or ROCm), or a small
pure-Python fallback where no GPU stack is installed. Writes one JSON result."""

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--out", default="results/bench.json")
    args = parser.parse_args()
    result = {"size": args.size, "task": os.environ.get("SLURM_ARRAY_TASK_ID"), "node": os.environ.get("SLURMD_NODENAME")}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        a = torch.randn(args.size, args.size, device="cuda")
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            a @ a
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / 10
        result.update(device=torch.cuda.get_device_name(0), tflops=2 * args.size**3 / seconds / 1e12)
    else:
        n = 64  # pure-Python fallback: a small matmul, so the pipeline is exercised everywhere
        a = [[float(i + j) for j in range(n)] for i in range(n)]
        start = time.perf_counter()
        [[sum(x * y for x, y in zip(row, col)) for col in zip(*a)] for row in a]
        seconds = time.perf_counter() - start
        result.update(device="cpu-fallback", gflops=2 * n**3 / seconds / 1e9)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
