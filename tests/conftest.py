"""Test-suite wiring: markers by folder, and the fixture plugins.

Tests under ``tests/unit`` are marked ``unit``, ``tests/integration`` ``integration`` and
``tests/e2e`` ``e2e`` automatically, so ``pytest -m unit`` runs just the fast ones.
"""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.stack",
    "tests.fixtures.batch",
    "tests.fixtures.operator",
    "tests.fixtures.containers",
]

_FOLDER_MARKS = {"unit": pytest.mark.unit, "integration": pytest.mark.integration, "e2e": pytest.mark.e2e}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.parts
        for folder, mark in _FOLDER_MARKS.items():
            if folder in parts:
                item.add_marker(mark)
