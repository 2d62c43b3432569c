"""Operator settings: each flag of ``batchop run`` wins over its environment variable, and a value that cannot
work is refused with the flag's name."""

from __future__ import annotations

import pytest

from batchop.batch import settings as config
from batchop.cli import main as cli
from batchop.cli.commands import run
from batchop.controller.runtime import Runtime
from batchop.controller.tracking import MAX_IN_FLIGHT
from batchwire import exitcodes
from batchwire.exitcodes import CLIError


def settings_of(argv: list[str]) -> config.Settings:
    return run._settings(cli.build_parser().parse_args(["run", *argv]))


def test_max_concurrent_reconciles_from_the_environment_and_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATCHOP_MAX_CONCURRENT_RECONCILES", raising=False)
    assert settings_of([]).max_concurrent_reconciles == MAX_IN_FLIGHT == 64
    monkeypatch.setenv("BATCHOP_MAX_CONCURRENT_RECONCILES", "16")
    assert settings_of([]).max_concurrent_reconciles == 16
    assert settings_of(["--max-concurrent-reconciles", "3"]).max_concurrent_reconciles == 3


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_concurrent_reconciles_below_one_is_a_usage_error(value: str) -> None:
    with pytest.raises(CLIError) as error:
        settings_of(["--max-concurrent-reconciles", value])
    assert error.value.code == exitcodes.USAGE
    assert "--max-concurrent-reconciles" in str(error.value)


def test_the_runtime_bounds_its_reconciles_and_queue_workers_by_the_setting() -> None:
    class NoKube:
        async def close(self) -> None:
            return None

    runtime = Runtime(config.Settings(max_concurrent_reconciles=3), NoKube(), storage={})  # type: ignore[arg-type]
    assert runtime.tracker.max_in_flight == 3 and runtime.queue.workers == 3
