"""What every benchmark report opens with: when it ran and on what machine."""

from __future__ import annotations

import datetime as dt
import os
import platform


def date_line(started: dt.datetime, quick: bool) -> str:
    """``- date: ...; run took N min`` (and `` (--quick)``), from ``started`` to now."""
    minutes = (dt.datetime.now().astimezone() - started).total_seconds() / 60
    return (f"- date: {started:%Y-%m-%d %H:%M %Z}; run took {minutes:.1f} min"
            + (" (--quick)" if quick else ""))


def machine() -> str:
    """The platform, processor and CPU count, as the reports' ``- machine:`` line starts."""
    return f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
