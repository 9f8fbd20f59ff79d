"""Progress lines inside long steps (calibration passes, latency measurements, runoff rounds).

A step calls :meth:`Progress.update` as it goes; a line is logged only when ``every_s`` seconds (default
10) have passed since the last one, or, where the total is known, when another tenth of it is done and
at least ``min_gap_s`` seconds have passed, so a short step prints nothing and a long one says where it is
at a steady rate. :meth:`Progress.done` closes with one line only if progress lines were printed.
"""

from __future__ import annotations

import logging
import time
from typing import Callable


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Rate-limited progress of one step: '<what>: 12/54 (22%), 31 s, about 110 s left'."""

    def __init__(self, log: logging.Logger, what: str, total: float | None = None, unit: str = "",
                 every_s: float = 10.0, min_gap_s: float = 3.0, clock: Callable[[], float] | None = None):
        self.log, self.what, self.total, self.unit = log, what, total, unit
        self.every_s, self.min_gap_s, self.clock = every_s, min_gap_s, clock or time.monotonic
        self.started = self.last = self.clock()
        self.tenth = 0
        self.lines = 0

    def due(self) -> bool:
        """Whether ``every_s`` seconds have passed since the last line (cheap: one clock read)."""
        return self.clock() - self.last >= self.every_s

    def update(self, done: float, detail: str = "", fraction: float | None = None) -> bool:
        """Report ``done`` (of ``total``) if a line is due; ``fraction`` overrides done/total. True if logged."""
        now = self.clock()
        share = fraction if fraction is not None else (done / self.total if self.total else None)
        tenth = int(min(max(share, 0.0), 1.0) * 10) if share is not None else 0
        by_time = now - self.last >= self.every_s
        by_share = share is not None and tenth > self.tenth and now - self.last >= self.min_gap_s
        if not (by_time or by_share) or (share is not None and share >= 1):
            return False
        self.tenth = max(self.tenth, tenth)
        self.last = now
        self.lines += 1
        elapsed = now - self.started
        count = f"{done:,.0f}" + (f"/{self.total:,.0f}" if self.total else "") + (f" {self.unit}" if self.unit else "")
        text = f"{self.what}: {count}"
        if share is not None:
            text += f" ({100 * share:.0f}%)"
        text += f", {_duration(elapsed)}"
        if share is not None and 0 < share < 1:
            text += f", about {_duration(elapsed * (1 - share) / share)} left"
        self.log.info("%s%s", text, f"; {detail}" if detail else "")
        return True

    def done(self, summary: str) -> None:
        """The closing line, only when progress lines were printed (a short step stays silent)."""
        if self.lines:
            self.log.info("%s: %s, %s", self.what, summary, _duration(self.clock() - self.started))
