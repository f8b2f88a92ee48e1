"""`sites check S`: connect once and compare the live site with its profile; `sites add --from-live S`:
read its partitions and nodes in one command."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aifactory_cli import settings
from aifactory_cli.errors import AifactoryError, StoreError
from aifactory_cli.jobs.model import now_iso
from aifactory_cli.scheduler.slurm_site import (
    check_command,
    describe_facts,
    parse_partition_gpus,
    parse_partitions,
    parse_site_facts,
    split_sections,
)
from aifactory_cli.units import format_duration, parse_duration

if TYPE_CHECKING:
    from aifactory_cli.scheduler.slurm_site import SiteFacts
    from aifactory_cli.service.session import Service
    from aifactory_cli.sites.profile import SiteProfile


def partition_drift(profile: SiteProfile, live: dict[str, dict[str, str]]) -> list[tuple[str, str, str]]:
    """(check, status, detail) for each partition of the profile against `scontrol show partition`.
    Entries with a QoS (Leonardo's boost-dbg = boost_usr_prod + boost_qos_dbg) take their limits
    from the QoS, so only the partition's existence and state are compared for them."""
    out: list[tuple[str, str, str]] = []
    for key, part in profile.partitions.items():
        name = part.slurm_name or key
        check = f"partition {name}" if name == key else f"partition {key} ({name})"
        got = live.get(name)
        if got is None:
            if live:
                out.append(
                    (
                        check,
                        "drift",
                        f"in the profile, but the cluster has no partition '{name}' "
                        f"(it has: {', '.join(sorted(live))})",
                    )
                )
            continue
        problems = []
        if part.qos is None:
            live_max = _slurm_time(got.get("MaxTime", ""))
            if part.max_time and live_max is not None and part.max_time_seconds != live_max:
                problems.append(
                    f"max_time: profile {format_duration(part.max_time_seconds or 0)}, "
                    f"cluster {format_duration(live_max)}"
                )
            live_nodes = got.get("MaxNodes", "UNLIMITED")
            if part.max_nodes and live_nodes.isdigit() and int(live_nodes) != part.max_nodes:
                problems.append(f"max_nodes: profile {part.max_nodes}, cluster {live_nodes}")
            live_min = got.get("MinNodes", "0")
            if part.min_nodes and live_min.isdigit() and max(1, int(live_min)) != part.min_nodes:
                problems.append(f"min_nodes: profile {part.min_nodes}, cluster {max(1, int(live_min))}")
        if got.get("State", "UP") != "UP":
            problems.append(f"state {got.get('State')}")
        out.extend((check, "drift", problem) for problem in problems)
        if not problems:
            limits = f"MaxTime={got.get('MaxTime')} MaxNodes={got.get('MaxNodes')}"
            if part.qos is not None:
                limits = f"limits come from QoS {part.qos} (not compared; see `sacctmgr show qos {part.qos}`)"
            out.append((check, "ok", limits))
    return out


def gpu_drift(profile: SiteProfile, live: dict[str, set[int]]) -> list[tuple[str, str, str]]:
    """(check, status, detail) for each GPU partition of the profile against the GPUs per node that
    sinfo reports for its nodes (`%G`): the count jobs are sized and billed by."""
    out: list[tuple[str, str, str]] = []
    for key, part in profile.partitions.items():
        name = part.slurm_name or key
        counts = live.get(name)
        expected = profile.gpus_per_node(part) if part.kind == "gpu" else 0
        if not counts or not expected:
            continue
        check = f"gpus per node {name}" if name == key else f"gpus per node {key} ({name})"
        if counts == {expected}:
            out.append((check, "ok", f"{expected}"))
        else:
            shown = ", ".join(str(c) for c in sorted(counts))
            out.append((check, "drift", f"profile {expected}, cluster nodes have {shown}"))
    return out


def account_check(account: str, suffixes: list[str], accounts: list[str]) -> tuple[str, str]:
    """(status, detail) for the configured account against the user's Slurm associations. With
    per-partition suffixes (Deucalion: <project>g, <project>x) the project id is checked through
    its suffixed forms: ok when at least one exists, and the detail says which partitions lack one."""
    yours = f"(yours: {', '.join(accounts) or 'none found'})"
    if not suffixes:
        if account in accounts:
            return "ok", f"'{account}' is among your accounts {yours}"
        return "fail", f"'{account}' is NOT among your accounts {yours}"
    base = next((account[: -len(x)] for x in sorted(suffixes, key=len, reverse=True) if account.endswith(x)), account)
    have = [base + x for x in suffixes if base + x in accounts]
    lack = [base + x for x in suffixes if base + x not in accounts]
    if not have:
        return "fail", f"none of {', '.join(base + x for x in suffixes)} is among your accounts {yours}"
    detail = f"{', '.join(have)} among your accounts"
    if lack:
        detail += f"; not {', '.join(lack)} (jobs on partitions that use it will be refused)"
    return "ok", f"{detail} {yours}"


def runs_check(profile: SiteProfile, facts: SiteFacts) -> list[tuple[str, str, str]]:
    """(check, status, detail) for what the profile says the site runs (`runs:`) against what the
    site answered: a version the sources name that the site no longer runs is info (sites upgrade;
    the recorded facts are what aifactory uses), never drift."""
    runs = profile.runs
    if runs is None:
        return []
    out = []
    if runs.slurm_version and facts.slurm_version:
        same = f"{facts.slurm_version}.".startswith(f"{runs.slurm_version}.")
        out.append(
            ("slurm version", "ok" if same else "info", f"profile {runs.slurm_version}, site {facts.slurm_version}")
        )
    if runs.compute != "slurmd":
        out.append(("compute nodes", "info", f"run {runs.compute} (profile: {runs.source or 'no source given'})"))
    return out


def _slurm_time(text: str) -> int | None:
    if text in ("UNLIMITED", "NONE", "", "Partition_Limit"):
        return None
    try:
        return parse_duration(text)
    except ValueError:
        return None


def check_site(svc: Service, site: str) -> dict[str, Any]:
    loaded = svc.profile(site)
    profile = loaded.profile
    checks: list[dict[str, str]] = []

    def add(name: str, status: str, detail: str) -> None:
        checks.append({"check": name, "status": status, "detail": detail})

    backend = svc.backend(site)
    t0 = time.monotonic()
    probe = backend.transport.run("true")
    add(
        "connect",
        "ok" if probe.ok else "fail",
        f"{time.monotonic() - t0:.2f} s to log in and run a command"
        + ("" if probe.ok else f": {probe.stderr.strip()}"),
    )
    # `logs` reads files over SFTP, which an rc file that prints on stdout breaks ("message too long")
    sftp_error = None
    try:
        backend.transport.read_bytes("/dev/null")
    except (AifactoryError, OSError) as exc:
        sftp_error = str(getattr(exc, "message", exc))
    if probe.noise_bytes:
        add(
            "login shell",
            "warn" if sftp_error else "info",
            f"{probe.noise_bytes} bytes of banner/rc-file output before commands (handled by markers)"
            + ("; guard what your rc files print with `[[ $- == *i* ]]`" if sftp_error else ""),
        )
    else:
        add("login shell", "ok", "no output before commands")
    add("file reads (SFTP)", "fail" if sftp_error else "ok", sftp_error or "`logs` can read job files")
    result = backend.transport.run(check_command())
    sections = split_sections(result.stdout)
    version, rc = sections.get("version", ("", 1))
    add("slurm", "ok" if rc == 0 else "fail", version.strip() or "sbatch --version failed")
    facts = parse_site_facts(sections, checked_at=now_iso())
    if facts.slurm_version:  # recorded for status (squeue --only-job-state) and later checks
        try:
            svc.store.save_site_facts(site, facts)
            recorded = "recorded"
        except StoreError as exc:  # the check itself still stands; status polls as without it
            recorded = f"not recorded: {exc.message}"
        add("slurm features", "info", f"{describe_facts(facts)} ({recorded})")
    for name, status, detail in runs_check(profile, facts):
        add(name, status, detail)
    text, rc = sections.get("partitions", ("", 1))
    live = parse_partitions(text) if rc == 0 else {}
    if rc != 0:
        add("partitions", "fail", text.strip() or "scontrol show partition failed")
    for name, status, detail in partition_drift(profile, live):
        add(name, status, detail)
    known = {p.slurm_name or k for k, p in profile.partitions.items()}
    extra = sorted(set(live) - known)
    if extra:
        add("partitions", "info", f"on the cluster, not in the profile: {', '.join(extra)}")
    text, rc = sections.get("accounts", ("", 1))
    accounts = sorted({a.strip() for a in text.splitlines() if a.strip()}) if rc == 0 else []
    account = settings.current().account_for(None, svc.config.for_site(site).account)
    if rc != 0:
        add("account", "info", f"cannot list associations: {text.strip()}")
    elif account:
        suffixes = sorted({p.account_suffix for p in profile.partitions.values() if p.account_suffix})
        add("account", *account_check(account, suffixes, accounts))
    else:
        add("account", "info", f"none configured; yours: {', '.join(accounts) or 'none found'}")
    text, rc = sections.get("gres", ("", 1))
    if rc == 0:
        for name, status, detail in gpu_drift(profile, parse_partition_gpus(text)):
            add(name, status, detail)
    text, rc = sections.get("sacct", ("", 1))
    add("sacct", "ok" if rc == 0 else "fail", "accounting answers" if rc == 0 else text.strip())
    ok = not any(c["status"] in ("fail", "drift") for c in checks)
    return {
        "site": site,
        "ok": ok,
        "profile_verified": str(profile.verified) if profile.verified else None,
        "checks": checks,
    }


# --- `sites add --from-live`: what a live cluster reports ---------------------------------------


@dataclass
class LiveSite:
    """What `sites add --from-live SITE` learns: the partitions and GPU facts from scontrol, and how
    SITE was reached (without these ssh settings the new profile could not log in where it just did)."""

    partitions: dict[str, Any]
    gpu_models: list[str]
    ssh: dict[str, Any]
    host: str | None
    port: int | None
    user: str | None
    gpu_vendor: str | None
    source: str


def read_live(svc: Service, site: str) -> LiveSite:
    """One remote command on `site`: `scontrol show partition` and `scontrol show node`."""
    import datetime as dt

    from aifactory_cli.errors import RemoteError
    from aifactory_cli.scheduler.slurm_site import live_command, split_live_output
    from aifactory_cli.sites.scaffold import partitions_from_live

    live = svc.profile(site).profile
    # key, known_hosts, pinned host keys, jump host, persist: everything but where and who
    ssh = live.ssh.model_dump(mode="json", exclude_defaults=True, exclude={"host", "port", "user", "notes"})
    result = svc.backend(site).transport.run(live_command())
    live_text = split_live_output(result.stdout)
    if not result.ok or live_text is None:
        raise RemoteError(f"scontrol failed on {site}: {result.stderr.strip()}")
    part_text, node_text = live_text
    partitions, facts = partitions_from_live(part_text, node_text)
    return LiveSite(
        partitions=partitions,
        gpu_models=list(facts["gpu_models"]),
        ssh=ssh,
        host=live.ssh.host,
        port=live.ssh.port,
        user=live.ssh.user,
        gpu_vendor=live.gpu.vendor if live.gpu else None,
        source=f"scontrol show partition/node on {site}, {dt.date.today()}",
    )
