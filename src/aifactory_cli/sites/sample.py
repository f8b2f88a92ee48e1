"""Sample jobs rendered with a profile, so an admin sees at once whether it produces sane scripts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aifactory_cli.sites.profile import load_profile_file
from aifactory_cli.sites.render import render
from aifactory_cli.sites.resolve import Overrides, resolve
from aifactory_cli.sites.userconfig import UserConfig
from aifactory_cli.spec.model import JobSpec

GPU_SAMPLE: dict[str, Any] = {
    "name": "sample-gpu",
    "resources": {"nodes": 1, "gpus_per_node": "all", "time": "30m"},
    "run": "python3 -c 'print(1)'",
}
CPU_SAMPLE = {"name": "sample-cpu", "resources": {"nodes": 1, "time": "30m"}, "run": "hostname"}


def render_samples(file: Path) -> list[dict[str, Any]]:
    loaded = load_profile_file(file)
    p = loaded.profile
    # a QoS only where the site needs one and its partitions do not name it (e.g. QoS = project)
    needs_qos = p.account.qos_required and not any(part.qos for part in p.partitions.values())
    qos = (p.account.example or "sample_qos") if needs_qos else None
    overrides = Overrides(account=p.account.example or "sample_account", qos=qos)
    samples: list[tuple[str, dict[str, Any]]] = [("cpu", CPU_SAMPLE)]
    if p.gpu is not None:
        gpu_sample = GPU_SAMPLE
        if p.gpu.per_node is None:  # unknown: a whole node cannot be asked for; one GPU can
            gpu_sample = {**GPU_SAMPLE, "resources": {**GPU_SAMPLE["resources"], "gpus_per_node": 1}}
        samples.insert(0, ("gpu", gpu_sample))
    results = []
    for kind, data in samples:
        job = resolve(JobSpec.model_validate(data), loaded, UserConfig(), overrides)
        script = render(job, "0" * 32, "00000000").script
        directives = " ".join(line.split(" ", 1)[1] for line in script.splitlines() if line.startswith("#SBATCH"))
        results.append({"kind": kind, "partition": job.partition_name, "directives": directives, "script": script})
    return results
