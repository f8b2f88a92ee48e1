"""A long training run that survives segments (README, "Long runs"): it saves its state to
$AIF_CHECKPOINT_DIR when aifactory signals it (SIGUSR1, `checkpoint.grace` before a segment ends) and
resumes from there when it starts again. Plain Python: replace the loop body with real training and
`state` with the model and optimizer (torch.save / torch.load), the shape stays the same.
"""

import argparse
import json
import os
import signal
import time

stop = False


def on_signal(signum, frame):  # only note it: the loop saves at the end of the current step
    global stop
    stop = True


signal.signal(signal.SIGUSR1, on_signal)  # first thing: the signal may come early in a short segment


def save(state: dict, ckpt: str) -> None:
    with open(ckpt + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(ckpt + ".tmp", ckpt)  # never a half-written checkpoint


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--step-seconds", type=float, default=0.1)
    args = parser.parse_args()
    ckpt = os.path.join(os.environ.get("AIF_CHECKPOINT_DIR", "."), "state.json")
    state = {"step": 0, "total": 0}
    if os.path.exists(ckpt):
        with open(ckpt) as f:
            state = json.load(f)
    print(
        f"segment {os.environ.get('AIF_SEGMENT', '0')} (restarts {os.environ.get('AIF_RESTARTS', '0')}): "
        f"from step {state['step']}",
        flush=True,
    )
    while state["step"] < args.steps:
        time.sleep(args.step_seconds)  # one step of work
        state["step"] += 1
        state["total"] = (state["total"] * 31 + state["step"]) % 1000003
        if stop or state["step"] % 100 == 0:  # on the signal, and now and then (a node may fail)
            save(state, ckpt)
        if stop:
            print(f"signalled: saved at step {state['step']}", flush=True)
            return 0  # exit 0 after a signal: the next segment goes on from here
    save(state, ckpt)  # the final state too: a signal that comes just now starts one more segment, which ends at once
    print(f"done: {state['step']} steps, result {state['total']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
