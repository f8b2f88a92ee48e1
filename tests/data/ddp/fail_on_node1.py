"""A task that fails on node 1 while every other task waits, as a rank of a DDP job that died leaves
the others waiting in a collective. Used by tests/real/test_rank_failure_real.py."""

import os
import sys
import time

node = os.environ.get("SLURM_NODEID", "?")
print(f"task on node {node}: pid {os.getpid()}", flush=True)
if node == "1":
    print(f"node {node}: failing now", file=sys.stderr, flush=True)
    sys.exit(3)
time.sleep(float(os.environ.get("FAIL_TEST_SLEEP", "300")))
print(f"node {node}: slept to the end: nobody stopped me", flush=True)
