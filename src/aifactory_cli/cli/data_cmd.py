"""`aifactory data ls|gc [--site S]`: the site's content-addressed data store (a spec's `data:`)."""

from __future__ import annotations

from typing import Any

import typer

from aifactory_cli.cli import completion, options, output

app = typer.Typer(
    help="The site's data store: files of the specs' data: entries, kept once by their sha256.",
    no_args_is_help=True,
)

_SITE = typer.Option(None, "--site", "-s", help="Site (default: the default site).", autocompletion=completion.sites)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _entry_json(e: Any) -> dict[str, Any]:
    return {
        "sha256": e.digest,
        "size": e.size,
        "names": sorted(e.names),
        "jobs": e.jobs,
        "site_dirs": e.site_dirs,
        "in_use": e.in_use,
        "recent": e.recent,
    }


def _tree_json(t: Any) -> dict[str, Any]:
    return {
        "tree": t.digest,
        "files": len(t.files),
        "size": t.size,
        "names": sorted(t.names),
        "jobs": t.jobs,
        "site_dirs": t.site_dirs,
        "in_use": t.in_use,
        "recent": t.recent,
    }


def _users(e: Any) -> str:
    known = set(e.jobs)
    others = [d for d in e.site_dirs if d.rstrip("/").rpartition("/")[2].rpartition("-")[2] not in known]
    shown = list(e.jobs) + [d.rpartition("/")[2] for d in others[:2]]
    more = f" (+{len(others) - 2} job dirs)" if len(others) > 2 else ""
    return ", ".join(shown) + more or ("(unused, recent)" if e.recent else "(unused)")


def _parts_json(v: Any) -> dict[str, Any]:
    from aifactory_cli.service.data import BUSY_MINUTES

    return {"busy": v.busy, "busy_minutes": BUSY_MINUTES, "unreadable_roots": v.unreadable}


@app.command("ls", help="List what the site's store holds: size, names, and which tracked jobs use it.")
def ls(site: str | None = _SITE, as_json: bool = typer.Option(False, "--json", help="Print JSON only.")) -> None:
    from aifactory_cli.service import data

    site = options.site_option(site)
    with output.service() as svc:
        views = data.stores(svc, site)
        if as_json:
            output.print_json(
                {
                    "stores": [
                        {
                            "site": v.site,
                            "path": v.path,
                            "bytes": v.total,
                            "entries": [_entry_json(e) for e in v.entries],
                            "trees": [_tree_json(t) for t in v.trees],
                            "leftovers": v.leftovers,
                            **_parts_json(v),
                        }
                        for v in views
                    ]
                }
            )
            return
        if not views:
            output.note(f"no data store on {site} yet")
        from rich.table import Table

        for v in views:
            table = Table(title=f"{v.site}: {v.path} ({_mb(v.total)})", box=None, header_style="bold", pad_edge=False)
            for col in ("SHA256", "SIZE", "NAMES", "JOBS"):
                table.add_column(col, overflow="fold")
            for e in v.entries:
                names = sorted(e.names)
                shown = ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")
                table.add_row(e.digest[:16], _mb(e.size), shown, _users(e))
            output.out().print(table)
            for t in v.trees:
                called = ", ".join(sorted(t.names)) or "?"
                size = f"{len(t.files)} file(s), {_mb(t.size)}"
                output.note(f"  dataset tree {t.digest[:16]} ({called}): {size}; {_users(t)}")
            if v.leftovers:
                output.note(f"  {len(v.leftovers)} leftover(s) of cut transfers, {_mb(sum(v.leftovers.values()))}")
            _say_kept(v)


def _say_kept(v: Any) -> None:
    from aifactory_cli.service.data import BUSY_MINUTES

    recent = [e for e in v.entries if e.recent and not e.in_use]
    if recent:
        output.note(
            f"  {len(recent)} unused entr{'y' if len(recent) == 1 else 'ies'} stored or found by a submission "
            f"in the last {BUSY_MINUTES} min: kept (its job may be about to link it)"
        )
    if v.busy:
        output.note(
            f"  {len(v.busy)} part(s) of transfers changed in the last {BUSY_MINUTES} min, "
            f"{_mb(sum(v.busy.values()))}: kept (maybe an upload in progress)"
        )
    if v.unreadable:
        output.note(f"  job dirs under {', '.join(v.unreadable)} could not all be read: no stored entry is freed")


@app.command(
    "gc",
    help="Free the entries no tracked job uses and no job dir on the site links to (and not stored or found "
    "by a submission in the last hour), and leftovers of cut transfers unchanged for an hour.",
)
def gc(
    site: str | None = _SITE,
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Only show what would be freed."),
    ended: bool = typer.Option(
        False, "--ended", help="Also free entries used only by jobs known here to have ended (their dirs too)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    from aifactory_cli.service import data

    site = options.site_option(site)
    with output.service() as svc:
        results = data.gc(svc, site, dry_run=dry_run, ended=ended)
        if as_json:
            output.print_json(
                {
                    "dry_run": dry_run,
                    "stores": [
                        {
                            "site": v.site,
                            "path": v.path,
                            "freed_bytes": size,
                            "freed": [_entry_json(e) for e in freed],
                            "freed_trees": [_tree_json(t) for t in trees],
                            "freed_leftovers": v.leftovers,
                            **_parts_json(v),
                        }
                        for v, freed, trees, size in results
                    ],
                }
            )
            return
        verb = "would free" if dry_run else "freed"
        for v, freed, trees, size in results:
            kept = len(v.entries) - len(freed)
            output.note(
                f"{v.site}: {v.path}: {verb} {len(freed)} entr{'y' if len(freed) == 1 else 'ies'}, "
                f"{len(trees)} dataset tree(s) and {len(v.leftovers)} leftover(s), {_mb(size)}; "
                f"{kept} entr{'y' if kept == 1 else 'ies'} kept (in use, recent, or in a kept tree)"
            )
            _say_kept(v)
