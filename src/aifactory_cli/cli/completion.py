"""Shell completion for values: site names and tracked jobs (`aifactory --install-completion`).

Completion runs on every TAB press, so it reads file names and the job store only, imports no
models, and never raises: a failure completes nothing rather than printing into the shell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer as _typer
import typer.completion as _typer_completion

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


# --- `--install-completion [SHELL]` / `--show-completion [SHELL]` -------------------------------------
# typer makes these plain flags where it can detect the shell, so `--show-completion zsh` printed the
# *detected* shell's script (bash) and ignored `zsh`; typer's options cannot take an optional value.
# So the flags stay, and a shell name right after one of them picks that shell's script.

SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def _shell_after(option: str, argv: list[str]) -> str | bool:
    """The shell named right after `option` on the command line, else True (detect the shell)."""
    try:
        following = argv[argv.index(option) + 1]
    except (ValueError, IndexError):
        return True
    return following if following in SHELLS else True


def _install(ctx: Any, param: Any, value: bool | None) -> Any:
    import sys

    from typer.completion import install_callback

    return install_callback(ctx, param, value and _shell_after("--install-completion", sys.argv))


def _show(ctx: Any, param: Any, value: bool | None) -> Any:
    import sys

    from typer.completion import show_callback

    return show_callback(ctx, param, value and _shell_after("--show-completion", sys.argv))


def _completion_options(
    install_completion: bool = _typer.Option(
        None,
        "--install-completion",
        callback=_install,
        expose_value=False,
        help="Install completion for the current shell, or for the shell named after it (bash, zsh, fish).",
    ),
    show_completion: bool = _typer.Option(
        None,
        "--show-completion",
        callback=_show,
        expose_value=False,
        help="Print the completion script of the current shell, or of the shell named after it (bash, zsh, fish).",
    ),
) -> Any:
    """The signature typer reads its two completion options from (typer.completion)."""


_typer_completion.__dict__["_install_completion_placeholder_function"] = _completion_options
