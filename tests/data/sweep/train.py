"""A sweep element: trains "with" the learning rate in $LR and writes outputs/rank0.json relative to
where it runs, as a user's script does. A negative rate fails with a traceback on stderr."""

import json
import os
import sys

lr = float(os.environ["LR"])
if lr < 0:
    print(f"bad learning rate {lr}", file=sys.stderr)
    raise ValueError(f"learning rate must be positive, got {lr}")
os.makedirs("outputs", exist_ok=True)
with open("outputs/rank0.json", "w") as f:
    seen = {
        k: os.environ.get(k)
        for k in ("SLURMD_NODENAME", "SLURM_STEP_ID", "CUDA_VISIBLE_DEVICES", "MASTER_ADDR", "MASTER_PORT")
    }
    json.dump({"lr": lr, "element": os.environ.get("AIF_ELEMENT"), "cwd": os.getcwd(), "env": seen}, f)
print(f"trained with lr={lr}")
