"""The age of a time stamp as apply writes it (``YYYY-MM-DDTHH:MM:SSZ``, UTC), for both
statuses: no ``datetime`` (the no-drift status imports only ``os``, ``sys`` and C
modules) and no ``strptime`` (which imports ``_strptime``, ``locale`` and ``calendar``)."""

from __future__ import annotations

import time

_SEPARATORS = ((4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":"), (19, "Z"))


def stamp_age(stamp: object, now: float | None = None) -> int | None:
    """Whole seconds from ``stamp`` to ``now`` (default: this moment), at least 0; None
    when ``stamp`` is not a well-formed stamp of a real date and time."""
    if (
        not isinstance(stamp, str)
        or len(stamp) != 20
        or not stamp.isascii()
        or any(stamp[i] != c for i, c in _SEPARATORS)
        or not all(stamp[i].isdigit() for i in range(19) if i not in (4, 7, 10, 13, 16))
    ):
        return None
    y, mo, d = int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10])
    h, mi, s = int(stamp[11:13]), int(stamp[14:16]), int(stamp[17:19])
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    month_days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    if not (y >= 1 and 1 <= mo <= 12 and 1 <= d <= month_days[mo - 1]):
        return None
    if not (h < 24 and mi < 60 and s < 60):
        return None
    then = (_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s) * 1_000_000
    at = round((time.time() if now is None else now) * 1_000_000)
    return max(0, int((at - then) / 1_000_000))


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468
