"""Shell completion for values: site names and tracked jobs (`aifactory --install-completion`).

Completion runs on every TAB press, so it reads file names and the job store only, imports no
models, and never raises: a failure completes nothing rather than printing into the shell.
"""

from __future__ import annotations

from aifactory_cli import paths


def sites(incomplete: str) -> list[str]:
    """Site names (built-in and user profiles) for --site."""
    try:
        return [s for s in paths.available_sites() if s.startswith(incomplete)]
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
    """Tracked job ids, newest first, with their name, site and state as help."""
    try:
        db = paths.state_dir() / "jobs.sqlite3"
        if not db.is_file():
            return []  # nothing tracked yet; do not create a store just to complete
        from aifactory_cli.jobs.store import Store

        store = Store(db)
        try:
            found = store.query()
        finally:
            store.close()
    except Exception:
        return []
    out = []
    for job in reversed(found):
        if job.id.startswith(incomplete):
            out.append((job.id, f"{job.name} ({job.site}, {job.state})"))
        elif job.name.startswith(incomplete) and incomplete:
            out.append((job.name, f"{job.id} ({job.site}, {job.state})"))
    return out[:50]
