"""The service's virtual clock.

Batch time runs ``scale`` times faster than real time from the moment the clock starts (or was
last re-based): at ``--time-scale 240`` a ``PT4H`` recurrence comes round every real minute. Every
timestamp the service writes, and every schedule decision it makes, reads :meth:`VirtualClock.now`.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta


class VirtualClock:
    def __init__(self, scale: float = 1.0, start: datetime | None = None) -> None:
        if scale <= 0:
            raise ValueError("time scale must be > 0")
        self._scale = float(scale)
        self._base_virtual = start or datetime.now(UTC)
        self._base_real = time.monotonic()

    @property
    def scale(self) -> float:
        return self._scale

    def now(self) -> datetime:
        elapsed = time.monotonic() - self._base_real
        return self._base_virtual + timedelta(seconds=elapsed * self._scale)

    def set_scale(self, scale: float) -> None:
        """Change the speed from now on, keeping the current virtual time."""
        if scale <= 0:
            raise ValueError("time scale must be > 0")
        self._base_virtual = self.now()
        self._base_real = time.monotonic()
        self._scale = float(scale)

    def advance(self, delta: timedelta) -> None:
        """Jump virtual time forward by ``delta`` (admin endpoint; never backwards)."""
        if delta < timedelta(0):
            raise ValueError("the clock only moves forward")
        self._base_virtual += delta

    def set_now(self, value: datetime) -> None:
        """Restore a virtual time (state file); refuses to go backwards from the current time."""
        if value > self.now():
            self._base_virtual = value
            self._base_real = time.monotonic()

    def real_seconds_until(self, when: datetime) -> float:
        """Real seconds from now until virtual time ``when`` (0 if it has passed)."""
        return max(0.0, (when - self.now()).total_seconds() / self._scale)

    def real_seconds(self, virtual: timedelta) -> float:
        """Real seconds that a virtual duration lasts."""
        return max(0.0, virtual.total_seconds() / self._scale)

    async def sleep_until(self, when: datetime) -> None:
        await asyncio.sleep(self.real_seconds_until(when))
