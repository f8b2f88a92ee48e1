"""Every `AIFACTORY_*` environment variable, read here and nowhere else, and its precedence.

The rest of the code never looks at `os.environ` for these: it asks `current()` for a `Settings`
snapshot (cheap: a dozen dictionary look-ups) and combines it with the user config and the site
profile through the methods below, so the order of precedence is written once. Pure code (such as
`sites.resolve.resolve`) takes a `Settings` as an argument instead of reading the environment.

An empty value counts as not set, except for `AIFACTORY_PERSIST` (an empty number is a mistake).

======================== ======================================= ============================================
Variable                 What it sets                            Precedence (the first one set wins)
======================== ======================================= ============================================
AIFACTORY_HOME           config and state under one directory    env ($AIFACTORY_HOME, state in ./state), then
                                                                 $XDG_CONFIG_HOME/aifactory and
                                                                 $XDG_STATE_HOME/aifactory, then
                                                                 ~/.config/aifactory, ~/.local/state/aifactory
AIFACTORY_CONFIG         the user config file                    env (then the file must exist), then
                                                                 <config dir>/config.yaml
AIFACTORY_PROFILES       extra profile dirs, ':'-separated       searched first, then <config dir>/profiles,
                                                                 then the built-in profiles
AIFACTORY_SITE           the default site                        --site, env, config default_site, `local`
                                                                 (and a candidate for `plan`, `--site auto`)
AIFACTORY_ACCOUNT        the Slurm account (project, budget)     --account, env, config sites.S.account
AIFACTORY_PERSIST        seconds an agent keeps a site's login   env (0 to 86400), config sites.S.persist,
                                                                 profile ssh.persist
AIFACTORY_SSH_USER       the SSH user                            env, config sites.S.user, profile ssh.user
AIFACTORY_SSH_KEY        the SSH identity file                   env, config sites.S.identity_file, profile
AIFACTORY_SSH_KNOWN_HOSTS  known_hosts *content* (a CI secret)   env (written to <state>/known_hosts.env),
                                                                 then the profile's ssh.known_hosts
AIFACTORY_SSH_CONFIG     the OpenSSH client config file          env, then ~/.ssh/config
AIFACTORY_OPENSSH_MUX    0/no/off: never move large files        env; else they go through the user's live
                         through OpenSSH                         ControlMaster when there is one, or one
                                                                 of aifactory's own (ssh/ownmaster.py)
AIFACTORY_DEBUG          tracebacks, remote details on errors    --debug or env
AIFACTORY_NONINTERACTIVE no prompts, no progress bars            env or $CI; else "stdin and stderr are a
                                                                 terminal"
AIFACTORY_AGENT_SETTINGS internal: the SSH settings (JSON) the   set by the CLI in the agent's environment;
                         CLI hands to the agent it starts        the agent takes it out at once
======================== ======================================= ============================================

Foundation level: this module imports only `errors`, so every layer may use it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aifactory_cli.errors import ConfigError

HOME = "AIFACTORY_HOME"
CONFIG = "AIFACTORY_CONFIG"
PROFILES = "AIFACTORY_PROFILES"
SITE = "AIFACTORY_SITE"
ACCOUNT = "AIFACTORY_ACCOUNT"
PERSIST = "AIFACTORY_PERSIST"
SSH_USER = "AIFACTORY_SSH_USER"
SSH_KEY = "AIFACTORY_SSH_KEY"
SSH_KNOWN_HOSTS = "AIFACTORY_SSH_KNOWN_HOSTS"
SSH_CONFIG = "AIFACTORY_SSH_CONFIG"
OPENSSH_MUX = "AIFACTORY_OPENSSH_MUX"
DEBUG = "AIFACTORY_DEBUG"
NONINTERACTIVE = "AIFACTORY_NONINTERACTIVE"
AGENT_SETTINGS = "AIFACTORY_AGENT_SETTINGS"

MAX_PERSIST = 86400.0  # a background login kept longer than a day is a forgotten one


@dataclass(frozen=True)
class Settings:
    """What the environment says, one snapshot. `Settings()` is an empty environment (the default
    for pure code and tests); `current()` reads the real one."""

    home: str | None = None
    config: str | None = None
    profiles: tuple[str, ...] = ()
    site: str | None = None
    account: str | None = None
    persist: str | None = None  # raw: checked by persist_for(), where the error can be reported
    ssh_user: str | None = None
    ssh_key: str | None = None
    ssh_known_hosts: str | None = None
    ssh_config: str | None = None
    openssh_mux: bool = True  # large transfers may use the user's OpenSSH ControlMaster (transport/ssh/mux.py)
    debug: bool = False
    noninteractive: bool = False
    xdg_config_home: str | None = None
    xdg_state_home: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            return env.get(name) or None

        return cls(
            home=get(HOME),
            config=get(CONFIG),
            profiles=tuple(p for p in env.get(PROFILES, "").split(":") if p),
            site=get(SITE),
            account=get(ACCOUNT),
            persist=env.get(PERSIST),
            ssh_user=get(SSH_USER),
            ssh_key=get(SSH_KEY),
            ssh_known_hosts=get(SSH_KNOWN_HOSTS),
            ssh_config=get(SSH_CONFIG),
            openssh_mux=(get(OPENSSH_MUX) or "yes").strip().lower() not in ("0", "no", "off", "false"),
            debug=bool(get(DEBUG)),
            noninteractive=bool(get("CI") or get(NONINTERACTIVE)),
            xdg_config_home=get("XDG_CONFIG_HOME"),
            xdg_state_home=get("XDG_STATE_HOME"),
        )

    # --- precedence: command line, then environment, then user config, then site profile ------------

    def account_for(self, given: str | None, configured: str | None) -> str | None:
        """--account, then AIFACTORY_ACCOUNT, then the config's sites.S.account."""
        return given or self.account or configured

    def default_site(self, configured: str | None) -> str:
        """AIFACTORY_SITE, then the config's default_site, then `local` (--site comes before all)."""
        return self.site or configured or "local"

    def persist_for(self, configured: float | None, profile: float) -> float:
        """AIFACTORY_PERSIST (checked: 0 to a day), then the config's sites.S.persist, then the profile."""
        if self.persist is not None:
            try:
                seconds = float(self.persist)
            except ValueError:
                seconds = float("nan")
            if not 0 <= seconds <= MAX_PERSIST:  # also refuses nan
                raise ConfigError(
                    f"{PERSIST}={self.persist!r} is not a number of seconds from 0 to {MAX_PERSIST:.0f}",
                    f"e.g. {PERSIST}=600, or 0 to connect for every command",
                )
            return seconds
        return configured if configured is not None else profile

    def ssh_user_for(self, configured: str | None, profile: str | None) -> str | None:
        return self.ssh_user or configured or profile

    def ssh_key_for(self, configured: str | None, profile: str | None) -> str | None:
        return self.ssh_key or configured or profile

    def ssh_config_file(self) -> Path:
        """AIFACTORY_SSH_CONFIG, else ~/.ssh/config."""
        return Path(self.ssh_config or "~/.ssh/config").expanduser()

    # --- where things live (paths.py turns these into directories) --------------------------------------

    def home_dir(self) -> Path | None:
        return Path(self.home).expanduser() if self.home else None

    def config_file(self) -> Path | None:
        """The config file AIFACTORY_CONFIG names, if it names one (then a missing file is a mistake)."""
        return Path(self.config).expanduser() if self.config else None

    def profile_dirs(self) -> list[Path]:
        return [Path(p).expanduser() for p in self.profiles]


def current() -> Settings:
    """The environment now (read on every call: tests and the agent change it at run time)."""
    return Settings.from_env()


def take_agent_settings() -> str | None:
    """The agent's hand-off from the CLI that started it, removed from the environment so that no
    process the agent starts inherits it."""
    return os.environ.pop(AGENT_SETTINGS, None)
