"""Where things live: state, config, user profiles, and the resources shipped in the package."""

from __future__ import annotations

from pathlib import Path

from aifactory_cli import settings

PACKAGE_DIR = Path(__file__).resolve().parent


def _resource_dir(name: str) -> Path:
    # In a wheel, templates/ and profiles/ are force-included inside the package. From a source
    # checkout (editable install or PYTHONPATH=src) they sit at the top of the repository.
    inside = PACKAGE_DIR / name
    if inside.is_dir():
        return inside
    return PACKAGE_DIR.parent.parent / name


def templates_dir() -> Path:
    return _resource_dir("templates") / "slurm"


def builtin_profiles_dir() -> Path:
    return _resource_dir("profiles")


def config_dir() -> Path:
    """AIFACTORY_HOME, else $XDG_CONFIG_HOME/aifactory, else ~/.config/aifactory (settings.py)."""
    env = settings.current()
    home = env.home_dir()
    if home:
        return home
    base = env.xdg_config_home or str(Path.home() / ".config")
    return Path(base) / "aifactory"


def state_dir() -> Path:
    """AIFACTORY_HOME/state, else $XDG_STATE_HOME/aifactory, else ~/.local/state/aifactory."""
    env = settings.current()
    home = env.home_dir()
    if home:
        return home / "state"
    base = env.xdg_state_home or str(Path.home() / ".local" / "state")
    return Path(base) / "aifactory"


def config_file() -> Path:
    return settings.current().config_file() or config_dir() / "config.yaml"


def user_profiles_dir() -> Path:
    return config_dir() / "profiles"


def profile_search_path() -> list[Path]:
    """AIFACTORY_PROFILES (':'-separated), then the user's profiles dir, then the built-in ones."""
    return [*settings.current().profile_dirs(), user_profiles_dir(), builtin_profiles_dir()]


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) with mode 0700 and make sure the leaf is 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (path.stat().st_mode & 0o777) != 0o700:
        path.chmod(0o700)
    return path


def available_sites() -> list[str]:
    """Every site name with a profile on the search path, plus the embedded `local` (file names
    only: nothing is parsed, so shell completion stays fast)."""
    names: set[str] = {"local"}
    for directory in profile_search_path():
        if directory.is_dir():
            names.update(p.stem for p in directory.glob("*.yaml"))
    return sorted(names)
