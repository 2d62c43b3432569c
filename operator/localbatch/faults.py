"""Injected faults for resilience tests: errors, latency and connection resets.

A :class:`FaultConfig` says how often a Batch API request fails (``rate``, 0..1) and how
(``codes``: HTTP statuses 429, 500, 503, or ``reset`` to drop the connection), and how much latency
each request gets. It can be changed while the service runs (``POST /_emulator/faults``).
``next_n`` forces the next N requests to fail regardless of ``rate`` (deterministic tests).
Faults never touch ``/_emulator/`` admin requests or the token endpoint.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from localbatch.errors import BatchError

FAULT_CODES = {"429": "TooManyRequests", "500": "InternalError", "503": "ServerBusy", "reset": ""}


class ConnectionReset(Exception):
    """Drop the connection without an answer."""


def parse_codes(text: str | list[str] | list[int]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else [str(x) for x in text]
    codes = [item.strip().lower() for item in items if str(item).strip()]
    for code in codes:
        if code not in FAULT_CODES:
            raise ValueError(f"unknown fault code {code!r}; use any of 429, 500, 503, reset")
    return codes


@dataclass
class FaultConfig:
    rate: float = 0.0
    codes: list[str] = field(default_factory=lambda: ["429", "503"])
    latency_ms: float = 0.0
    answer_latency_ms: float = 0.0
    """Delay of the answer once the request has been carried out (the write landed, the answer is late)."""
    retry_after: int = 1
    """Seconds in ``Retry-After`` on 429/503 (Azure sends up to 30; tests want it short)."""
    next_n: int = 0
    """Fail the next N Batch API requests whatever the rate."""
    operations: list[str] = field(default_factory=list)
    """Only these operations (e.g. ``create_job_schedule``); empty means all."""
    injected: int = 0

    def update(self, data: dict[str, Any]) -> None:
        if "rate" in data:
            rate = float(data["rate"])
            if not 0.0 <= rate <= 1.0:
                raise ValueError("rate must be between 0 and 1")
            self.rate = rate
        if "codes" in data:
            self.codes = parse_codes(data["codes"]) or ["429", "503"]
        if "latencyMs" in data:
            self.latency_ms = max(0.0, float(data["latencyMs"]))
        if "answerLatencyMs" in data:
            self.answer_latency_ms = max(0.0, float(data["answerLatencyMs"]))
        if "retryAfter" in data:
            self.retry_after = max(0, int(data["retryAfter"]))
        if "nextN" in data:
            self.next_n = max(0, int(data["nextN"]))
        if "operations" in data:
            self.operations = [str(op) for op in data["operations"] or []]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {
            "rate": data["rate"],
            "codes": data["codes"],
            "latencyMs": data["latency_ms"],
            "answerLatencyMs": data["answer_latency_ms"],
            "retryAfter": data["retry_after"],
            "nextN": data["next_n"],
            "operations": data["operations"],
            "injected": data["injected"],
        }

    def applies(self, operation: str) -> bool:
        """Whether faults (errors and latency) apply to ``operation`` (all when ``operations`` is empty)."""
        return not self.operations or operation in self.operations

    def pick(self, operation: str, rng: random.Random) -> str | None:
        """The fault for this request (``"429"``, ``"reset"``...), or ``None``."""
        if not self.applies(operation):
            return None
        if self.next_n > 0:
            self.next_n -= 1
        elif self.rate <= 0 or rng.random() >= self.rate:
            return None
        self.injected += 1
        return rng.choice(self.codes) if self.codes else "503"

    def error_for(self, code: str) -> BatchError:
        if code == "reset":
            raise ConnectionReset()
        status = int(code)
        headers = {"Retry-After": str(self.retry_after)} if status in (429, 503) else {}
        return BatchError(FAULT_CODES[code], status=status, headers=headers)
