"""Which top-level properties of a Batch job schedule must be written to match the desired state.

Both sides are compared in :func:`batchop.spec.normalize.comparable` form, so Batch's read-time
defaults, its duration format, metadata order and SAS renewals never cause a write. Pass the desired
body with blob references already resolved (the operator resolves before diffing); its SAS query
strings are ignored here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchop.spec.normalize import COMPARED_PROPERTIES, comparable_property


def changed_properties(desired: Mapping[str, Any], observed: Mapping[str, Any]) -> list[str]:
    """The properties (subset of ``schedule``, ``jobSpecification``, ``metadata``, in that order) that differ.

    ``desired`` is a :func:`batchop.spec.mapping.desired_schedule` body; ``observed`` the schedule as
    Batch returns it (GET or list). A property absent from ``desired`` is left alone.
    """
    return [
        name
        for name in COMPARED_PROPERTIES
        if name in desired and comparable_property(name, desired[name]) != comparable_property(name, observed.get(name))
    ]


def differences(desired: Mapping[str, Any], observed: Mapping[str, Any], *, limit: int = 20) -> list[str]:
    """Dotted paths where the comparable forms differ (``jobSpecification.jobManagerTask.commandLine``).

    For logs and Events ("updating: jobSpecification.poolInfo...targetDedicatedNodes"); at most ``limit``.
    """
    found: list[str] = []
    for name in COMPARED_PROPERTIES:
        if name in desired:
            _walk(comparable_property(name, desired[name]), comparable_property(name, observed.get(name)), name, found)
    return found[:limit]


def _walk(left: Any, right: Any, path: str, found: list[str]) -> None:
    if left == right:
        return
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        for key in list(left) + [k for k in right if k not in left]:
            _walk(left.get(key), right.get(key), f"{path}.{key}", found)
        return
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        for index, (a, b) in enumerate(zip(left, right, strict=True)):
            _walk(a, b, f"{path}[{index}]", found)
        return
    found.append(path)
