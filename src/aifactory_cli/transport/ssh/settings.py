"""The `ssh:` block of a site profile: how to reach the site's login node (a pydantic model).

The site profile (`aifactory_cli.sites.profile`) embeds it; the transport reads it. Importing this
module imports pydantic but nothing of the SSH stack.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SshSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    host: str | None = None
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    host_key_fingerprints: list[str] = Field(default_factory=list)
    proxy_jump: str | None = None
    connect_timeout: float = 15.0
    # seconds a background agent keeps the connection open for later commands (like OpenSSH
    # ControlPersist); 0: every command connects itself. AIFACTORY_PERSIST overrides it.
    persist: float = Field(0, ge=0)
    notes: list[str] = Field(default_factory=list)

    @field_validator("host_key_fingerprints")
    @classmethod
    def _fps(cls, v: list[str]) -> list[str]:
        for fp in v:
            if not re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}=?", fp):
                raise ValueError(f"'{fp}' is not a SHA256 host key fingerprint (SHA256:<43 base64 chars>)")
        return v
