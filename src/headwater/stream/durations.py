"""Durations written as "500ms", "10s", "5m", "1h", "1d", or as int milliseconds."""

from __future__ import annotations

import re
from datetime import timedelta

from headwater.errors import ConfigError

__all__ = ["Duration", "to_ms"]

Duration = int | float | str | timedelta

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def to_ms(value: Duration, what: str, *, allow_zero: bool = True) -> int:
    """Milliseconds in `value`; `what` names the setting in the error message."""
    if isinstance(value, bool):
        ms: float = -1
    elif isinstance(value, timedelta):
        ms = value.total_seconds() * 1000
    elif isinstance(value, int | float):
        ms = value
    else:
        match = _PATTERN.match(value)
        if match is None:
            msg = f'{what}={value!r} is not a duration; write e.g. "500ms", "10s", "5m" or int ms'
            raise ConfigError(msg)
        ms = float(match.group(1)) * _UNITS[match.group(2)]
    if ms < 0 or (ms == 0 and not allow_zero) or ms != int(ms):
        rule = "≥ 0" if allow_zero else "> 0"
        msg = f"{what}={value!r} must be a whole number of milliseconds {rule}"
        raise ConfigError(msg)
    return int(ms)
