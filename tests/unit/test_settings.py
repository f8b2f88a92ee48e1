"""settings.py: every AIFACTORY_* variable is read there and nowhere else, with one order of precedence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aifactory_cli import settings
from aifactory_cli.errors import ConfigError
from aifactory_cli.settings import Settings

SRC = Path(settings.__file__).resolve().parent
NAME = re.compile(r"(?<![A-Za-z0-9_])AIFACTORY_[A-Z_]+\b")
READ = re.compile(r"(environ\.(get|pop)\(|environ\[|getenv\()\s*['\"]AIFACTORY_")


def _constants() -> set[str]:
    return {v for k, v in vars(settings).items() if k.isupper() and isinstance(v, str) and v.startswith("AIFACTORY_")}


def test_no_module_but_settings_reads_an_aifactory_variable() -> None:
    readers = [
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "settings.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if READ.search(line)
    ]
    assert readers == []


def test_every_variable_the_code_names_is_a_setting_in_the_table() -> None:
    named = {m for path in SRC.rglob("*.py") for m in NAME.findall(path.read_text())}
    assert named <= _constants(), sorted(named - _constants())
    table = settings.__doc__ or ""
    assert all(name in table for name in _constants()), sorted(n for n in _constants() if n not in table)


def test_empty_means_unset_and_lists_split() -> None:
    env = Settings.from_env(
        {"AIFACTORY_ACCOUNT": "", "AIFACTORY_SITE": "", "AIFACTORY_PROFILES": "/a::/b", "AIFACTORY_DEBUG": ""}
    )
    assert env.account is None and env.site is None and not env.debug
    assert env.profiles == ("/a", "/b")
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({"CI": "true"}).noninteractive
    assert Settings.from_env({"AIFACTORY_NONINTERACTIVE": "1"}).noninteractive


def test_command_line_then_environment_then_config_then_profile() -> None:
    env = Settings.from_env({"AIFACTORY_ACCOUNT": "env", "AIFACTORY_SITE": "lumi", "AIFACTORY_SSH_USER": "u"})
    assert env.account_for("cli", "config") == "cli"
    assert env.account_for(None, "config") == "env"
    assert Settings().account_for(None, "config") == "config"
    assert env.default_site("jupiter") == "lumi"
    assert Settings().default_site("jupiter") == "jupiter"
    assert Settings().default_site(None) == "local"
    assert env.ssh_user_for("config", "profile") == "u"
    assert Settings().ssh_user_for(None, "profile") == "profile"
    assert Settings().ssh_key_for("config", "profile") == "config"


@pytest.mark.parametrize("value", ["", "-5", "nan", "1e9", "ten"])
def test_persist_out_of_range_is_a_config_error(value: str) -> None:
    # an empty AIFACTORY_PERSIST is a mistake, not "unset"
    with pytest.raises(ConfigError, match="AIFACTORY_PERSIST"):
        Settings.from_env({"AIFACTORY_PERSIST": value}).persist_for(30.0, 600.0)


def test_persist_precedence() -> None:
    assert Settings.from_env({"AIFACTORY_PERSIST": "0"}).persist_for(30.0, 600.0) == 0.0
    assert Settings().persist_for(30.0, 600.0) == 30.0
    assert Settings().persist_for(None, 600.0) == 600.0


def test_paths_follow_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from aifactory_cli import paths

    monkeypatch.delenv("AIFACTORY_HOME", raising=False)
    monkeypatch.delenv("AIFACTORY_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xc"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xs"))
    monkeypatch.setenv("AIFACTORY_PROFILES", f"{tmp_path / 'p1'}:{tmp_path / 'p2'}")
    assert paths.config_dir() == tmp_path / "xc" / "aifactory"
    assert paths.state_dir() == tmp_path / "xs" / "aifactory"
    assert paths.config_file() == tmp_path / "xc" / "aifactory" / "config.yaml"
    assert paths.profile_search_path()[:2] == [tmp_path / "p1", tmp_path / "p2"]
    monkeypatch.setenv("AIFACTORY_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("AIFACTORY_CONFIG", str(tmp_path / "c.yaml"))
    assert paths.config_dir() == tmp_path / "h"
    assert paths.state_dir() == tmp_path / "h" / "state"
    assert paths.config_file() == tmp_path / "c.yaml"
