"""Schedule ids derived from namespace and name: valid for Batch, deterministic, collision-free."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchop.spec import naming

_LABEL = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
_SUBDOMAIN = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", fullmatch=True)


def test_simple_names_read_naturally() -> None:
    assert naming.schedule_id_for("default", "wordcount") == "default_wordcount"


def test_dots_become_hyphens_with_a_hash_so_they_cannot_collide() -> None:
    dotted = naming.schedule_id_for("team-a", "report.daily")
    hyphen = naming.schedule_id_for("team-a", "report-daily")
    assert dotted.startswith("team-a_report-daily-") and dotted != hyphen
    assert naming.schedule_id_error(dotted) is None


def test_namespace_name_split_cannot_collide() -> None:
    assert naming.schedule_id_for("a-b", "c") != naming.schedule_id_for("a", "b-c")


def test_long_names_are_shortened_with_a_stable_suffix() -> None:
    name = "x" * 200
    first = naming.schedule_id_for("analytics", name)
    assert len(first) == naming.MAX_LENGTH
    assert first == naming.schedule_id_for("analytics", name)  # deterministic
    assert first != naming.schedule_id_for("analytics", name[:-1] + "y")  # the suffix tells them apart


@given(namespace=_LABEL, name=_SUBDOMAIN)
def test_always_valid_for_batch(namespace: str, name: str) -> None:
    schedule_id = naming.schedule_id_for(namespace, name)
    assert naming.schedule_id_error(schedule_id) is None
    assert naming.validate_schedule_id(schedule_id) == schedule_id


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("", "non-empty"), ("a" * 65, "at most 64"), ("my.schedule", "'.'"), ("a b", "' '"), (None, "non-empty")],
)
def test_invalid_ids_are_explained(value: object, fragment: str) -> None:
    problem = naming.schedule_id_error(value)
    assert problem and fragment in problem
    with pytest.raises(ValueError, match="schedule id"):
        naming.validate_schedule_id(value)  # type: ignore[arg-type]


def test_effective_schedule_id_prefers_the_spec() -> None:
    assert naming.effective_schedule_id({"scheduleId": "nightly"}, "default", "x") == "nightly"
    assert naming.effective_schedule_id({}, "default", "x") == "default_x"


def test_requires_namespace_and_name() -> None:
    with pytest.raises(ValueError):
        naming.schedule_id_for("", "x")
