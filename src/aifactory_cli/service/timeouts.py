"""`--timeout` values for waiting: seconds, or a duration written as `resources.time` takes it."""

from __future__ import annotations

import math

from aifactory_cli.errors import BadInput
from aifactory_cli.units import parse_duration

TIMEOUT_FORMS = "seconds (3600) or a duration: 90s, 10m, 1h, 1d, HH:MM:SS; 0 = check once"


def parse_timeout(value: str, option: str = "--timeout") -> float:
    """Seconds from a number of seconds (`3600`, `0`, `2.5`) or a duration (`90s`, `10m`, `1h`, `1d`,
    `HH:MM:SS`, `MM:SS`). Unlike `resources.time`, a bare number means seconds, not minutes."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = float(parse_duration(text, allow_zero=True))
        except ValueError as exc:
            raise BadInput(f"{option} {value!r}: {exc}", f"give {TIMEOUT_FORMS}") from None
    if not (math.isfinite(seconds) and seconds >= 0):
        raise BadInput(f"{option} {value}: not a number of seconds", f"e.g. {option} 3600 or 1h (0 = check once)")
    return seconds
