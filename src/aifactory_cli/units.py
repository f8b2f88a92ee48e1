"""Parsing and formatting of durations and memory sizes, as users and Slurm write them."""

from __future__ import annotations

import re

_SUFFIX_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)\s*$", re.IGNORECASE)
_CLOCK = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_duration(value: str | int, *, allow_zero: bool = False) -> int:
    """Seconds from `HH:MM:SS`, `MM:SS`, `D-HH:MM:SS`, `D-HH`, `90m`, `2h`, `1d`, `45s`, or minutes (int).

    Raises ValueError with an explanation. A zero time is refused unless `allow_zero` (`--timeout 0s`).
    """
    if isinstance(value, bool):
        raise ValueError("a time is needed, not true/false")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("time must be positive")
        return value * 60  # Slurm reads a bare number as minutes
    text = str(value).strip()
    m = _SUFFIX_TIME.match(text)
    if m:
        amount = float(m.group(1))
        unit = m.group(2).lower()[0]
        seconds = int(amount * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])
        if seconds <= 0 and not (allow_zero and amount == 0):
            raise ValueError("time must be positive")
        return seconds
    m = _CLOCK.match(text)
    if not m:
        raise ValueError(f"'{text}' is not a time: use HH:MM:SS, D-HH:MM:SS, or a number with a unit like 90m, 2h, 1d")
    days, a, b, c = m.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:
        # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = ([*parts, 0, 0])[:3]
        total = int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    elif len(parts) == 3:
        hours, minutes, seconds = parts
        total = hours * 3600 + minutes * 60 + seconds
    elif len(parts) == 2:
        minutes, seconds = parts
        total = minutes * 60 + seconds
    else:
        total = parts[0] * 60
    if (days is not None or len(parts) > 1) and any(x >= 60 for x in parts[1:]):
        raise ValueError(f"'{text}': minutes and seconds must be below 60")
    if total <= 0 and not allow_zero:
        raise ValueError("time must be positive")
    return total


def format_duration(seconds: int) -> str:
    """Slurm's form: `HH:MM:SS`, or `D-HH:MM:SS` from one day on."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


_MEM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_memory(value: str | int) -> int:
    """MiB from `60G`, `512M`, `1T`, `60GB`, `60GiB`, or a number of MiB (Slurm's default unit)."""
    if isinstance(value, bool):
        raise ValueError("a memory size is needed, not true/false")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("memory must be positive")
        return value
    m = _MEM.match(str(value))
    if not m:
        raise ValueError(f"'{value}' is not a memory size: use e.g. 60G, 512M, 1T")
    amount = float(m.group(1))
    unit = (m.group(2) or "M").upper()
    mib = amount * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    if mib < 1:
        raise ValueError("memory must be at least 1M")
    return int(mib)


def format_memory(mib: int) -> str:
    """Slurm's form: whole G when it divides, else M."""
    if mib % (1024 * 1024) == 0:
        return f"{mib // (1024 * 1024)}T"
    if mib % 1024 == 0:
        return f"{mib // 1024}G"
    return f"{mib}M"
