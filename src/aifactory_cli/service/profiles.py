"""Site profiles for users and admins: `sites list / show / validate / add`, and the known site
names that --site/--sites and shell completion check against.

Module level imports `paths` and `errors` only: completion and option checks call `known_sites()`
on every TAB press and before `list`, so models and YAML are imported where a function needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aifactory_cli import paths
from aifactory_cli.errors import AifactoryError, BadInput, NotFound, did_you_mean

if TYPE_CHECKING:
    from aifactory_cli.service.session import Service


def known_sites() -> list[str]:
    """Every site name with a profile, and `local` (file names only: nothing is parsed)."""
    return paths.available_sites()


def check_site_names(names: list[str], option: str) -> list[str]:
    """Each name must have a profile (NotFound, with the nearest one); a site named twice counts once."""
    known = known_sites()
    for name in names:
        if name not in known:
            guess = did_you_mean(name, known) or did_you_mean(name.lower(), known)
            raise NotFound(
                f"unknown site '{name}' in {option}",
                f"did you mean '{guess}'?" if guess else f"known sites: {', '.join(known)}",
            )
    return list(dict.fromkeys(names))


# --- sites list / show / validate -------------------------------------------------------------------


def _profile_row(name: str) -> dict[str, Any]:
    from aifactory_cli.sites.profile import load_profile

    lp = load_profile(name)
    p = lp.profile
    return {
        "name": name,
        "description": p.description,
        "scheduler": p.scheduler,
        "gpu_model": p.gpu.model if p.gpu else None,
        "gpu_vendor": p.gpu.vendor if p.gpu else None,
        "gpus_per_node": p.gpu.per_node if p.gpu else 0,
        "cpu_arch": p.cpu_arch,
        "partitions": list(p.partitions),
        "verified": p.verified.isoformat() if p.verified else None,
        "file": str(lp.files[-1]),
        "source": _source(lp.files[-1]),
    }


def _source(path: Any) -> str:
    """`built-in` for aifactory's own profiles, `user` for one from a profile directory."""
    from pathlib import Path

    from aifactory_cli.paths import builtin_profiles_dir

    try:
        Path(path).resolve().relative_to(builtin_profiles_dir().resolve())
    except ValueError:
        return "user"
    return "built-in"


def list_profiles() -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(one row per valid profile, {name, error} per profile that does not load)."""
    rows, broken = [], []
    for name in known_sites():
        try:
            rows.append(_profile_row(name))
        except AifactoryError as exc:
            broken.append({"name": name, "error": str(exc)})
    return rows, broken


@dataclass
class ProfileView:
    """A resolved profile (extends applied): its data, where it comes from, and it as YAML."""

    site: str
    data: dict[str, Any]
    files: list[str]
    digest: str
    comments: list[str]  # description, sources, verification date and notes, one line each
    yaml: str

    def to_json(self) -> dict[str, Any]:
        return {"site": self.data, "files": self.files, "digest": self.digest}


def show(site: str) -> ProfileView:
    import yaml

    from aifactory_cli.sites.profile import load_profile

    lp = load_profile(site)
    p = lp.profile
    data = p.model_dump(mode="json", exclude_none=True)
    comments = [
        f"site {site}: {p.description}",
        f"from: {' <- '.join(str(f) for f in reversed(lp.files))}",
        f"verified: {p.verified or 'never'}",
        *(f"source: {s.title} <{s.url}>{' (' + s.snapshot + ')' if s.snapshot else ''}" for s in p.sources),
        *(f"note: {n}" for n in [*p.ssh.notes, *p.notes]),
    ]
    return ProfileView(
        site=site,
        data=data,
        files=[str(f) for f in lp.files],
        digest=lp.digest,
        comments=comments,
        yaml=yaml.safe_dump(data, sort_keys=False, width=110),
    )


def validate(file: Path) -> list[dict[str, Any]]:
    """The profile file checked (schema, extends chain) by rendering sample jobs with it."""
    from aifactory_cli.sites.sample import render_samples

    return render_samples(file)


# --- sites add ----------------------------------------------------------------------------------------


def add_site(
    svc: Service,
    name: str,
    *,
    from_live: str | None = None,
    extends: str | None = None,
    host: str | None = None,
    port: int | None = None,
    user: str | None = None,
    gpu_vendor: str | None = None,
    gpu_model: str | None = None,
    gpus_per_node: int | None = None,
    account_required: bool | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Scaffold profile NAME in the user's profiles dir, from the flags or from what site `from_live`
    reports. It is put in place only if it renders sample jobs: a broken profile would hide a
    built-in of the same name. Returns {file, profile, samples}."""
    import yaml

    from aifactory_cli.sites.profile import SITE_NAME_RE, find_profile_file
    from aifactory_cli.sites.sample import render_samples
    from aifactory_cli.sites.scaffold import install_profile, scaffold

    if not SITE_NAME_RE.match(name):
        raise BadInput(f"'{name}' is not a site name", "use lower-case letters, digits, '-' and '_'")
    target = paths.user_profiles_dir() / f"{name}.yaml"
    if target.exists() and not force:
        raise BadInput(f"{target} exists", "pass --force to overwrite it, or pick another name")
    if extends == name and find_profile_file(name, exclude=target) is None:  # it would extend only itself
        raise BadInput(
            f"--extends {name}: there is no other profile named {name} to extend",
            "extend a built-in site (`aifactory sites list`), or leave out --extends",
        )
    partitions = None
    source = "aifactory sites add (flags)"
    live_ssh: dict[str, Any] = {}
    if from_live:
        from aifactory_cli.service.sites import read_live

        live = read_live(svc, from_live)
        partitions, source, live_ssh = live.partitions, live.source, live.ssh
        host = host or live.host
        port = port or live.port
        user = user or live.user
        if not gpus_per_node:
            gpus_per_node = max((p.get("gpus_per_node", 0) for p in partitions.values()), default=0) or None
        gpu_model = gpu_model or (live.gpu_models[0] if live.gpu_models else None)
        if gpus_per_node and not gpu_vendor:
            gpu_vendor = live.gpu_vendor
    data = scaffold(
        name,
        host=host,
        port=port,
        user=user,
        extends=extends,
        gpu_vendor=gpu_vendor,
        gpu_model=gpu_model,
        gpus_per_node=gpus_per_node,
        account_required=account_required,
        partitions=partitions,
        source=source,
    )
    if live_ssh and not extends:  # with --extends the ssh block is inherited anyway
        data["ssh"] = {**data.get("ssh", {}), **{k: v for k, v in live_ssh.items() if k not in data.get("ssh", {})}}
    paths.ensure_private_dir(target.parent)
    existed = target.exists()
    text = "# Scaffolded by `aifactory sites add`: check every value against the site's documentation\n"
    text += yaml.safe_dump(data, sort_keys=False)
    try:  # checked before it is put in place: a broken profile would hide a built-in of the same name
        samples = install_profile(target, text, render_samples)
    except AifactoryError as exc:
        kept = f"{target} was left as it was" if existed else f"{target} was not written"
        exc.hint = f"{exc.hint}; {kept}" if exc.hint else f"{kept}; fix the flags and rerun"
        raise
    return {"file": str(target), "profile": data, "samples": samples}
