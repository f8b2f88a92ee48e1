"""A counter that needs STEPS x 0.1 s of work, saves its state to $AIF_CHECKPOINT_DIR when signalled
(and every 20 steps), resumes from it, and prints its result; FAIL_SEGMENT=N fails in segment N."""

import json
import os
import signal
import sys
import time

ckpt = os.path.join(os.environ["AIF_CHECKPOINT_DIR"], "state.json")
steps = int(sys.argv[1])
state = {"step": 0, "total": 0}
if os.path.exists(ckpt):
    with open(ckpt) as f:
        state = json.load(f)
stop = False


def on_signal(signum, frame):
    global stop
    stop = True


def save():
    with open(ckpt + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(ckpt + ".tmp", ckpt)


signal.signal(signal.SIGUSR1, on_signal)
segment = os.environ["AIF_SEGMENT"]
print(f"segment {segment} restarts {os.environ['AIF_RESTARTS']} from step {state['step']}", flush=True)
if os.environ.get("FAIL_SEGMENT") == segment:
    print("failing on purpose", file=sys.stderr, flush=True)
    sys.exit(7)
while state["step"] < steps:
    time.sleep(float(os.environ.get("STEP_SECONDS", "0.1")))
    state["step"] += 1
    state["total"] = (state["total"] * 31 + state["step"]) % 1000003
    if stop:
        save()
        print(f"signalled: saved at step {state['step']}", flush=True)
        sys.exit(0)
    if state["step"] % 20 == 0:
        save()
save()  # the final state too: a signal that comes as the program ends starts one more segment
print(f"result {state['total']}", flush=True)
