"""Every built-in GPU site, unchanged, runs a job on the test bed as that site.

`tests/profiles/bed/<site>-bed.yaml` is `extends: <site>` plus the bed's ssh block, so the site's own
profile renders the job (partition, QoS, account form, GPU request, modules, work dir) and the bed
(tests/testbed/sites.sh: the partitions, QoS and accounts of every GPU site) runs it. A 1-GPU job per
site, all submitted at once; each must COMPLETE in the partition, account and QoS the site rendered,
with the site's modules loaded and one GPU visible. Then the jobs a site's rules refuse are refused,
with the reason.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.real.bedjobs import BED_PROFILES, Submitted, aif, bed_env, submit_all

pytestmark = pytest.mark.real

# site -> the CLI arguments a user of that site gives (account in the site's own form, QoS where the
# site needs one). Lucia's account form is unknown (the profile renders none): Slurm's default.
SITES: dict[str, list[str]] = {
    "lumi": ["-A", "project_465000001"],
    "jupiter": ["-A", "exalab"],
    "jedi": ["-A", "exalab"],
    "juwels-booster": ["-A", "exalab"],
    "leonardo": ["-A", "AIFAC_F01_001"],
    "marenostrum5": ["-A", "ehpc191"],
    "meluxina": ["-A", "p200000"],
    "karolina": ["-A", "EU-25-10"],
    "vega": ["-A", "d2026d06-166-users"],
    "deucalion": ["-A", "f202500017aivlabdeucalion"],  # the profile appends the partition's suffix (g)
    "discoverer": ["-A", "ehpc-aif-2026pg01-905", "--qos", "ehpc-aif-2026pg01-905"],
    "lucia": [],
}
SHOW = "SLURM_JOB_(PARTITION|ACCOUNT|QOS)|SLURMD_NODENAME|(CUDA|ROCR)_VISIBLE_DEVICES|TESTBED_MODULE_.*"
SPEC = f"""name: bed-one
resources: {{gpus_per_node: 1, time: 5m}}
run: env | grep -E '^({SHOW})=' | sort
"""


@pytest.fixture(scope="module")
def site_jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Submitted]:
    tmp = tmp_path_factory.mktemp("site-beds")
    (tmp / "one.yaml").write_text(SPEC)
    subs = [Submitted(site, f"{site}-bed", ["one.yaml", *args]) for site, args in SITES.items()]
    return {s.case: s for s in submit_all(subs, bed_env(tmp), tmp, wait_s=240)}


def _directive(script: str, name: str) -> str | None:
    m = re.search(rf"^#SBATCH --{name}=(\S+)$", script, re.M)
    return m.group(1) if m else None


def _modules(script: str) -> list[str]:
    m = re.search(r"^module load (.+?) \|\|", script, re.M)
    return m.group(1).split() if m else []


def test_every_site_profile_is_pointed_at_the_bed() -> None:
    builtin = {p.stem for p in (REPO / "profiles").glob("*.yaml")} - {"local"}
    assert builtin == set(SITES), "a built-in site without its <site>-bed test (or the other way round)"
    for site in SITES:
        text = (BED_PROFILES / f"{site}-bed.yaml").read_text()
        assert f"\nextends: {site}\n" in text and "port: 2222" in text


@pytest.mark.parametrize("site", list(SITES))
def test_one_gpu_job_runs_on_the_bed_as_the_site(site_jobs: dict[str, Submitted], site: str) -> None:
    sub = site_jobs[site]
    assert sub.job, sub.explain()
    assert (sub.job["state"], sub.job["exit_code"]) == ("COMPLETED", 0), sub.explain()
    seen = dict(line.split("=", 1) for line in sub.text("stdout.log").splitlines() if "=" in line)
    script = sub.text("job.sh")
    # it ran where and as what the site's profile rendered
    partition = _directive(script, "partition")
    if partition is None:  # Discoverer+: no partition named; the bed routes its projects (job_submit.lua)
        assert site == "discoverer", script
        partition = "tb-discoverer"
    assert seen["SLURM_JOB_PARTITION"] == partition, sub.explain()
    account = _directive(script, "account")
    if account is not None:  # Slurm keeps account names in lower case
        assert seen["SLURM_JOB_ACCOUNT"] == account.lower(), sub.explain()
    assert seen["SLURM_JOB_QOS"] == (_directive(script, "qos") or "normal"), sub.explain()
    # the site's modules were loaded (the bed's stubs say so), and one GPU was given
    for module in _modules(script):
        name, _, version = module.rpartition("/")
        var = "TESTBED_MODULE_" + re.sub(r"[/-]", "_", name.upper())
        assert seen.get(var) == version, f"{module} not loaded: {sub.explain()}"
    visible = "ROCR_VISIBLE_DEVICES" if site == "lumi" else "CUDA_VISIBLE_DEVICES"
    assert len(seen[visible].split(",")) == 1, sub.explain()


# Jobs a site's rules refuse, whether aifactory (the profile knows the rule) or the bed's Slurm (the
# site's QoS and partition limits, tests/testbed/sites.sh) refuses them: exit 2, nothing runs, and
# the message says why.
REFUSED = {
    # MareNostrum 5: QoS acc_ehpc allows 3 days (3P)
    "marenostrum5-4-days": ("marenostrum5", "resources: {gpus_per_node: 1, time: 4d}", ["-A", "ehpc191"], r"time"),
    # Leonardo: QoS boost_qos_bprod starts at 65 nodes (3P-copy)
    "leonardo-bprod-1-node": (
        "leonardo",
        "resources: {gpus_per_node: 4, partition: boost-bprod, time: 1h}",
        ["-A", "AIFAC_F01_001"],
        r"65|QOSMinNode",
    ),
    # Discoverer+: the project QoS is mandatory (3P)
    "discoverer-no-qos": (
        "discoverer",
        "resources: {gpus_per_node: 1, time: 1h}",
        ["-A", "ehpc-aif-2026pg01-905"],
        r"QoS|qos",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_the_site_refuses_is_refused_with_the_reason(tmp_path: Path, case: str) -> None:
    site, resources, args, reason = REFUSED[case]
    (tmp_path / "job.yaml").write_text(f"name: refused\n{resources}\nrun: echo must-not-run\n")
    env = bed_env(tmp_path)
    r = aif(["submit", "job.yaml", "--site", f"{site}-bed", *args], env, tmp_path, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert re.search(reason, r.stderr), r.stderr
    listed = aif(["list", "--json"], env, tmp_path, timeout=60)
    assert json.loads(listed.stdout)["jobs"] == [], listed.stdout
