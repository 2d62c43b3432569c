"""The local Batch service's fault settings: ``answerLatencyMs`` (the request carried out, its answer late)
beside ``latencyMs`` (the request delayed before it is carried out)."""

from __future__ import annotations

import pytest

from localbatch.faults import FaultConfig


def test_answer_latency_is_set_reported_and_cleared_apart_from_latency() -> None:
    faults = FaultConfig()
    faults.update({"answerLatencyMs": 2500, "operations": ["create_job_schedule"]})
    assert faults.answer_latency_ms == 2500 and faults.latency_ms == 0
    assert faults.to_json()["answerLatencyMs"] == 2500
    assert faults.applies("create_job_schedule") and not faults.applies("get_job_schedule")
    faults.update({"latencyMs": 10})
    assert faults.answer_latency_ms == 2500, "a partial update leaves it alone"
    faults.update({"answerLatencyMs": -1})
    assert faults.answer_latency_ms == 0


def test_an_unknown_code_is_still_refused() -> None:
    with pytest.raises(ValueError):
        FaultConfig().update({"codes": ["418"]})
