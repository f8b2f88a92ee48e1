"""Charge estimates checked by hand against the sites' billing rules (sites.md 1.9, 2.7)."""

import pytest

from aifactory_cli.sites.billing import estimate
from aifactory_cli.sites.profile import load_profile
from aifactory_cli.sites.resolve import Overrides, resolve
from aifactory_cli.sites.userconfig import UserConfig
from aifactory_cli.spec.model import load_spec_text


@pytest.fixture(autouse=True)
def _home(aif_home):
    return aif_home


def _charge(text: str, site: str = "lumi", account: str = "project_465000123"):
    job = resolve(load_spec_text(text).spec, load_profile(site), UserConfig(), Overrides(account=account))
    return job.partition_name, estimate(job)


def test_lumi_standard_g_bills_4_gpu_hours_per_node_hour() -> None:
    # 2 whole nodes x 3 h: 4 GPU-h per node-hour -> 4 x 2 x 3 = 24 GPU-hours, whatever is used
    part, c = _charge("run: x\nresources: {nodes: 2, gpus_per_node: all, time: 3h}\n")
    assert part == "standard-g" and (c.amount, c.unit) == (24.0, "GPU-hours")


def test_lumi_small_g_bills_half_per_gcd_slice() -> None:
    # 1 GCD, 7 cores, 60 GB (the defaults): max(1, ceil(7/8)=1, ceil(60/64)=1) x 0.5 x 2 h = 1.0
    part, c = _charge("run: x\nresources: {gpus_per_node: 1, time: 2h}\n")
    assert part == "small-g" and c.amount == 1.0
    # 2 GCDs but 200 GB: the memory slice dominates: max(2, ceil(14/8)=2, ceil(200/64)=4) x 0.5 x 10 h = 20
    part, c = _charge("run: x\nresources: {gpus_per_node: 2, memory: 200G, time: 10h}\n")
    assert part == "small-g" and c.amount == 20.0


def test_lumi_small_cpu_core_hours() -> None:
    # 1 task x 16 cores, 64 GB: max(16, ceil(64/2)=32) x 4 h = 128 core-hours
    part, c = _charge("run: x\nresources: {cpus_per_task: 16, memory: 64G, time: 4h}\n")
    assert part == "small" and (c.amount, c.unit) == (128.0, "core-hours")


def test_jupiter_whole_nodes_node_hours_in_core_hours() -> None:
    # 4 nodes x 6 h, whole nodes: 4 x 6 = 24 node-hours = 24 x 288 = 6912 core-hours
    part, c = _charge("run: x\nresources: {nodes: 4, gpus_per_node: all, time: 6h}\n", "jupiter", "exalab")
    assert part == "booster" and (c.amount, c.unit) == (6912.0, "core-hours")


def test_arrays_multiply() -> None:
    _, c = _charge("run: x\nmatrix: {A: [1, 2, 3]}\nresources: {gpus_per_node: 1, time: 2h}\n")
    assert c.amount == 3.0 and "3 array elements" in c.how


def test_charge_text_reads_well() -> None:
    # no memory asked: no `ceil(0 GB/2)` term; singular/plural; minutes below an hour (issue 14)
    _, c = _charge("run: x\nresources: {time: 5m}\n")
    assert c.how == "1 core x 1 node x 5 min"
    _, c = _charge("run: x\nresources: {cpus_per_task: 16, memory: 64G, time: 4h}\n")
    assert c.how == "max(16 cores, ceil(64 GB/2)) x 1 node x 4 h"
    _, c = _charge("run: x\nresources: {nodes: 2, gpus_per_node: all, time: 90m}\n")
    assert c.how == "4 per node-hour x 2 nodes x 1.5 h"
    _, c = _charge("run: x\nresources: {gpus_per_node: 2, memory: 200G, time: 10h}\n")
    assert c.how == "0.5 x max(2 GCDs, ceil(14 cores/8), ceil(200 GB/64)) x 1 node x 10 h"
