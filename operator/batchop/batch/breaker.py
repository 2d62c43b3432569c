"""A circuit breaker per Batch account: when Batch cannot be reached, say so at once instead of per request.

Without it, each request to an unreachable account spends the SDK's whole retry budget (connection
timeouts and backoff, tens of seconds) before it fails, and with hundreds of creates queued behind the
gateway's concurrency limit the last resource learns of the outage minutes after the first. With it:

- ``closed``: requests go through. ``threshold`` unreachable failures in a row (no HTTP answer at all:
  refused, reset, timed out) open the breaker;
- ``open``: requests fail at once with a recoverable ``BatchUnavailable`` error naming the outage, for
  ``cooldown`` seconds (doubling on each failed probe, up to ``max_cooldown``, 30 s: also the longest
  a recovered account waits to be used again);
- ``half-open``: after the cooldown one request (the probe) goes through; the others keep failing fast.
  An answer, any HTTP status included, closes the breaker; another unreachable failure opens it again.

HTTP errors (429, 5xx...) are answers: the SDK retries those itself and they never trip the breaker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


class CircuitOpen(Exception):
    """Raised instead of sending a request while the breaker is open."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Breaker:
    threshold: int = 3
    cooldown: float = 5.0
    max_cooldown: float = 30.0
    clock: Callable[[], float] = field(default=time.monotonic)
    failures: int = 0
    state: str = "closed"
    opened_at: float = 0.0
    down_since: float | None = None
    current_cooldown: float = 0.0
    probing: bool = False

    def before(self) -> None:
        """Call before sending; raises :class:`CircuitOpen` when the request must not go out."""
        if self.state == "closed":
            return
        now = self.clock()
        wait = self.opened_at + self.current_cooldown - now
        if self.state == "open" and wait <= 0:
            self.state = "half-open"
        if self.state == "half-open" and not self.probing:
            self.probing = True  # this request is the probe
            return
        down = now - (self.down_since if self.down_since is not None else now)
        raise CircuitOpen(
            f"Batch has been unreachable for {down:.0f}s ({self.failures} requests in a row got no answer); "
            f"not sending; next attempt in {max(wait, 0.0):.0f}s",
            retry_after=max(wait, 1.0),
        )

    def answered(self) -> None:
        """The request got an HTTP answer (any status): the account is reachable."""
        self.failures = 0
        self.state = "closed"
        self.probing = False
        self.down_since = None
        self.current_cooldown = 0.0

    def unreachable(self) -> None:
        """The request got no answer at all (refused, reset, timed out)."""
        now = self.clock()
        self.failures += 1
        if self.down_since is None:
            self.down_since = now
        if self.state == "half-open":
            self.probing = False
            self.current_cooldown = min(self.current_cooldown * 2, self.max_cooldown)
            self._open(now)
        elif self.state == "closed" and self.failures >= self.threshold:
            self.current_cooldown = self.cooldown
            self._open(now)

    def abandoned(self) -> None:
        """The request was cancelled before any outcome: a probe gives its turn to the next request."""
        self.probing = False

    def _open(self, now: float) -> None:
        self.state = "open"
        self.opened_at = now
