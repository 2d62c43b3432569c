"""``$filter`` / ``$select`` / ``maxresults`` as Batch list operations read them."""

from __future__ import annotations

import pytest

from localbatch import odata
from localbatch.errors import BatchError

ITEMS = [
    {
        "id": "Nightly-1",
        "state": "active",
        "creationTime": "2025-06-01T00:00:00.0000000Z",
        "executionInfo": {"poolId": "pool-a"},
        "priority": 5,
    },
    {
        "id": "nightly-2",
        "state": "disabled",
        "creationTime": "2025-06-02T00:00:00.0000000Z",
        "executionInfo": {"poolId": "pool-b"},
        "priority": -1,
    },
    {"id": "weekly", "state": "completed", "creationTime": "2025-06-03T12:00:00.0000000Z", "priority": 0},
]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("startswith(id,'nightly')", ["Nightly-1", "nightly-2"]),
        ("id eq 'NIGHTLY-1'", ["Nightly-1"]),
        ("id ne 'weekly'", ["Nightly-1", "nightly-2"]),
        ("state eq 'active' or state eq 'completed'", ["Nightly-1", "weekly"]),
        ("startswith(id, 'nightly') and state eq 'disabled'", ["nightly-2"]),
        ("not (state eq 'active')", ["nightly-2", "weekly"]),
        ("creationTime gt 2025-06-01T12:00:00Z", ["nightly-2", "weekly"]),
        ("creationTime le datetime'2025-06-02T00:00:00Z'", ["Nightly-1", "nightly-2"]),
        ("executionInfo/poolId eq 'pool-b'", ["nightly-2"]),
        ("priority ge 0", ["Nightly-1", "weekly"]),
        ("priority lt 0", ["nightly-2"]),
        ("id eq 'it''s'", []),
    ],
)
def test_filter(expression: str, expected: list[str]) -> None:
    predicate = odata.compile_filter(expression)
    assert predicate is not None
    assert [item["id"] for item in ITEMS if predicate(item)] == expected


@pytest.mark.parametrize("expression", ["id eqq 'x'", "startswith(id)", "id eq", "(state eq 'a'", "id eq 'a' xor"])
def test_bad_filters_name_the_parameter(expression: str) -> None:
    with pytest.raises(BatchError) as info:
        odata.compile_filter(expression)
    assert info.value.code == "InvalidQueryParameterValue"
    assert ("QueryParameterName", "$filter") in info.value.values


def test_select_keeps_nested_paths() -> None:
    paths = odata.parse_select("id,executionInfo/poolId")
    assert paths is not None
    assert odata.apply_select(ITEMS[0], paths) == {"id": "Nightly-1", "executionInfo": {"poolId": "pool-a"}}
    assert odata.apply_select(ITEMS[2], paths) == {"id": "weekly"}


def test_max_results_bounds() -> None:
    assert odata.parse_max_results(None) == 1000
    assert odata.parse_max_results("1") == 1
    for bad in ("0", "1001", "x"):
        with pytest.raises(BatchError):
            odata.parse_max_results(bad)
