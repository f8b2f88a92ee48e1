"""The user config (~/.config/aifactory/config.yaml, or AIFACTORY_CONFIG): your defaults and per-site
settings, and loading it."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aifactory_cli import paths, settings
from aifactory_cli.errors import ConfigError
from aifactory_cli.spec.yamlio import format_validation_error, load_yaml_file


class SiteUserSettings(BaseModel):
    """Your settings for one site."""

    model_config = ConfigDict(extra="forbid")
    user: str | None = Field(None, description="login user name on the site")
    account: str | None = Field(None, description="Slurm account / project charged (-A)")
    qos: str | None = Field(None, description="Slurm QoS")
    ssh_host: str | None = Field(None, description="host name or ~/.ssh/config alias of the login node")
    identity_file: str | None = Field(None, description="SSH private key")
    partition: str | None = Field(None, description="partition used unless a job names one")
    persist: float | None = Field(None, description="seconds a background agent keeps the connection open")


class UserConfig(BaseModel):
    """The aifactory user config (~/.config/aifactory/config.yaml): your defaults and per-site settings."""

    model_config = ConfigDict(extra="forbid")
    default_site: str | None = Field(None, description="the site used when a command names none")
    sites: dict[str, SiteUserSettings] = Field(default_factory=dict, description="settings by site name")

    def for_site(self, site: str) -> SiteUserSettings:
        return self.sites.get(site) or SiteUserSettings()


def load_user_config() -> tuple[UserConfig, Path]:
    path = paths.config_file()
    if not path.exists():
        if settings.current().config_file():  # named explicitly: a missing file is a mistake
            raise ConfigError(
                f"AIFACTORY_CONFIG names {path}, which does not exist",
                "fix the path, or unset AIFACTORY_CONFIG to use the default config file",
            )
        return UserConfig(), path
    doc = load_yaml_file(path, ConfigError, what="config file")
    data = doc.data or {}
    if not isinstance(data, dict):
        raise ConfigError("the config file must be a YAML mapping", where=str(path))
    try:
        return UserConfig.model_validate(data), path
    except ValidationError as exc:
        raise format_validation_error(exc, doc, UserConfig, ConfigError) from exc


def default_site(config: UserConfig) -> str:
    return settings.current().default_site(config.default_site)
