"""One error hierarchy: a message for the user, a hint with the fix, and the contract's exit code.

The CLI catches `AifactoryError` at one boundary and prints message + hint; the cause is kept
for `--debug`.
"""

from __future__ import annotations

from typing import Literal

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_REMOTE = 3
EXIT_NOT_FOUND = 4
EXIT_TIMEOUT = 5
EXIT_INTERRUPTED = 130
# not in the contract's table (an extension): a bug in aifactory, so that CI can tell a crash from a
# failed job (1); 70 is EX_SOFTWARE in sysexits.h
EXIT_INTERNAL = 70


class AifactoryError(Exception):
    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, hint: str | None = None, *, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.where = where

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class BadInput(AifactoryError):
    """Spec, profile, config or argument problems (exit 2); nothing was submitted."""

    exit_code = EXIT_BAD_INPUT


class SpecError(BadInput):
    pass


class ProfileError(BadInput):
    pass


class ConfigError(BadInput):
    pass


class LimitError(BadInput):
    """The site cannot run what the spec asks for."""


# Whether the scheduler may have queued a job when a submission failed: "no" when it certainly did
# not (nothing was sent, or Slurm said so), "maybe" otherwise (the submission is then in doubt).
Queued = Literal["no", "maybe"]


class RemoteError(AifactoryError):
    """Connection, authentication, host key or remote command failure (exit 3)."""

    exit_code = EXIT_REMOTE

    def __init__(
        self, message: str, hint: str | None = None, *, where: str | None = None, queued: Queued = "maybe"
    ) -> None:
        super().__init__(message, hint, where=where)
        self.queued: Queued = queued


class HostKeyError(RemoteError):
    pass


class AuthError(RemoteError):
    pass


class TunnelRefused(RemoteError):
    """The site could not connect a forwarded port to its target (nothing listens there yet, no route)."""


class SubmitRejected(BadInput):
    """The scheduler refused the job at submission (bad account, partition...)."""


class NotFound(AifactoryError):
    exit_code = EXIT_NOT_FOUND


class WaitTimeout(AifactoryError):
    exit_code = EXIT_TIMEOUT


class StoreError(AifactoryError):
    """The local state store cannot be read or written."""

    exit_code = EXIT_REMOTE


class LocalWriteError(StoreError):
    """A local file could not be written (a full disk, a quota): exit 3, as the store's errors."""


def did_you_mean(word: str, choices: list[str] | set[str] | tuple[str, ...]) -> str | None:
    """The closest choice to `word`, if any is close enough to be a likely typo."""
    import difflib

    matches = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None
