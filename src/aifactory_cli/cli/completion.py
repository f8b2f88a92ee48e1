"""Shell completion for values: site names and tracked jobs (`aifactory --install-completion`).

Completion runs on every TAB press, so it reads file names and the job store only, imports no
models, and never raises: a failure completes nothing rather than printing into the shell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aifactory_cli.service.listing import Job


def sites(incomplete: str) -> list[str]:
    """Site names (built-in and user profiles) for --site."""
    try:
        from aifactory_cli.service.profiles import known_sites

        return [s for s in known_sites() if s.startswith(incomplete)]
    except Exception:  # completion must not fail loudly
        return []


def sites_or_auto(incomplete: str) -> list[str]:
    """submit --site: a site name, or `auto` (the broker picks)."""
    return (["auto"] if "auto".startswith(incomplete) else []) + sites(incomplete)


def site_list(incomplete: str) -> list[str]:
    """A comma-separated --sites value: complete its last name."""
    done, _, last = incomplete.rpartition(",")
    prefix = f"{done}," if done else ""
    chosen = set(done.split(",")) if done else set()
    return [prefix + s for s in sites(last) if s not in chosen]


def jobs(incomplete: str) -> list[tuple[str, str]]:
    """Tracked job ids, newest first, with their name, site and state as help; and the names that
    start with `incomplete`, each once (a name means its newest job, or its only live one)."""
    try:
        from aifactory_cli.service.listing import tracked_jobs

        found = tracked_jobs()  # nothing tracked yet: no store is created just to complete
    except Exception:
        return []
    out = []
    names: dict[str, list[Job]] = {}
    for job in reversed(found):
        if job.id.startswith(incomplete):
            out.append((job.id, f"{job.name} ({job.site}, {job.state})"))
        elif job.name.startswith(incomplete) and incomplete:
            if job.name not in names:
                out.append((job.name, ""))  # its help is filled in below, once all its jobs are seen
            names.setdefault(job.name, []).append(job)
    for i, (value, help_text) in enumerate(out):
        same = names.get(value)
        if same and not help_text:
            newest = same[0]
            more = f"; {len(same)} jobs of this name" if len(same) > 1 else ""
            out[i] = (value, f"{newest.id} ({newest.site}, {newest.state}{more})")
    return out[:50]
