"""OpenAPI v3 schemas derived from the ``azure-batch`` SDK's own models.

The SDK (API 2025-06-01) is the contract for the Batch wire format, so the CRD's ``schedule``,
``jobSpecification`` and ``metadata`` are generated from it rather than written by hand:

- properties: each model's rest fields (``Model._attr_to_rest_field``), under their wire names;
- types: the attribute type hints (``typing.get_type_hints``): models recurse, ``list[...]`` become
  arrays, ``dict[str, str]`` string maps, ``datetime`` RFC 3339 strings, ``timedelta`` ISO-8601
  duration strings (with :data:`batchop.api.patterns.DURATION_PATTERN`), enums (``models/_enums.py``)
  ``enum`` lists of their wire values;
- ``required``: hints that are not ``Optional``;
- descriptions: the ``:ivar name: ...`` lines of the class docstrings.

:func:`model_schema` takes a ``customize`` callback that may amend each model's schema (the CRD adds
blob references and forbidden 2016 names that way).
"""

from __future__ import annotations

import datetime
import enum
import re
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

from azure.batch import models as batch_models

from batchop.api.patterns import BATCH_ID_PATTERN, BATCH_ID_PREFIX_PATTERN, DURATION_NOTE, DURATION_PATTERN
from batchop.api.schema import JSONSchema

Customize = Callable[[str, JSONSchema], None]

# Constraints the REST API documents in prose, made machine-checked. Keyed by (model, wire name).
EXTRA_CONSTRAINTS: dict[tuple[str, str], JSONSchema] = {
    ("BatchAutoPoolSpecification", "autoPoolIdPrefix"): {"maxLength": 20, "pattern": BATCH_ID_PREFIX_PATTERN},
    ("BatchJobSpecification", "priority"): {"minimum": -1000, "maximum": 1000},
    ("BatchJobManagerTask", "id"): {"maxLength": 64, "pattern": BATCH_ID_PATTERN},
    ("BatchJobPreparationTask", "id"): {"maxLength": 64, "pattern": BATCH_ID_PATTERN},
    ("BatchJobReleaseTask", "id"): {"maxLength": 64, "pattern": BATCH_ID_PATTERN},
    ("BatchJobConstraints", "maxTaskRetryCount"): {"minimum": -1},
    ("BatchTaskConstraints", "maxTaskRetryCount"): {"minimum": -1},
    ("BatchStartTask", "maxTaskRetryCount"): {"minimum": -1},
    ("BatchJobManagerTask", "requiredSlots"): {"minimum": 1},
    ("BatchPoolSpecification", "taskSlotsPerNode"): {"minimum": 1},
    ("BatchPoolSpecification", "targetDedicatedNodes"): {"minimum": 0},
    ("BatchPoolSpecification", "targetLowPriorityNodes"): {"minimum": 0},
    ("BatchJobSpecification", "maxParallelTasks"): {"minimum": -1},
}

_MAX_DESCRIPTION = 600  # characters: keeps the CRD well under the 256 KiB client-side-apply annotation limit
_LINK = re.compile(r"`([^`<]+?)\s*<([^>]+)>`_+")
_IVAR = re.compile(r"^\s*:ivar (\w+):(.*)$")
_FIELD_END = re.compile(r"^\s*:(vartype|ivar|param|type|keyword|return|rtype)\b")


def _clean(text: str) -> str:
    text = _LINK.sub(r"\1 (\2)", text)
    text = text.replace("<br />", " ").replace("\\", "")
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > _MAX_DESCRIPTION:
        cut = text.rfind(". ", 0, _MAX_DESCRIPTION)
        text = text[: cut + 1] if cut > 80 else text[:_MAX_DESCRIPTION].rstrip() + "..."
    return text


def class_summary(cls: type) -> str:
    """The first paragraph of a model's docstring."""
    doc = cls.__doc__ or ""
    return _clean(doc.strip().split("\n\n", 1)[0])


def ivar_descriptions(cls: type) -> dict[str, str]:
    """``{python attribute name: description}`` from the ``:ivar name: text`` lines of a docstring."""
    out: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in (cls.__doc__ or "").splitlines():
        match = _IVAR.match(line)
        if match or _FIELD_END.match(line):
            if current is not None:
                out[current] = _clean(" ".join(lines))
            current, lines = (match.group(1), [match.group(2)]) if match else (None, [])
        elif current is not None:
            lines.append(line)
    if current is not None:
        out[current] = _clean(" ".join(lines))
    return out


def rest_fields(cls: type) -> dict[str, Any]:
    """``{python attribute name: rest field}``; the SDK computes the map on first instantiation."""
    cls({})
    return dict(cls._attr_to_rest_field)  # type: ignore[attr-defined]


def type_hints(cls: type) -> dict[str, Any]:
    """Resolved type hints of a model (its module names other models as ``_models.X``)."""
    module = sys.modules[cls.__module__]
    return typing.get_type_hints(cls, globalns={**vars(module), "_models": batch_models})


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """``(inner hint, optional?)``; ``Union[str, SomeEnum]`` collapses to the enum."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums:
            return enums[0], optional
        if len(args) == 1:
            return args[0], optional
        raise TypeError(f"unsupported union {hint!r}")
    return hint, False


def is_model(hint: Any) -> bool:
    """True for an ``azure.batch.models`` model class."""
    return isinstance(hint, type) and hint.__module__ == batch_models.BatchJobSpecification.__module__


def _hint_schema(hint: Any, customize: Customize | None) -> JSONSchema:
    hint, _ = _unwrap_optional(hint)
    if hint is str:
        return {"type": "string"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if hint is datetime.datetime:
        return {"type": "string", "format": "date-time"}
    if hint is datetime.timedelta:
        return {"type": "string", "pattern": DURATION_PATTERN}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"type": "string", "enum": [member.value for member in hint]}
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return {"type": "array", "items": _hint_schema(item, customize)}
    if origin is dict:
        _, value = typing.get_args(hint)
        return {"type": "object", "additionalProperties": _hint_schema(value, customize)}
    if is_model(hint):
        return model_schema(hint, customize=customize)
    raise TypeError(f"no schema for type hint {hint!r}")


def model_schema(cls: type, *, customize: Customize | None = None) -> JSONSchema:
    """The OpenAPI v3 (structural) schema of an ``azure.batch.models`` class, recursively.

    Only fields a client may send (visibility ``create``) are included. ``customize(model_name, schema)``
    is called for every model schema after it is built and may change it in place.
    """
    hints = type_hints(cls)
    descriptions = ivar_descriptions(cls)
    properties: dict[str, JSONSchema] = {}
    required: list[str] = []
    for attr, field in rest_fields(cls).items():
        visibility = field._visibility or []
        if visibility and "create" not in visibility:
            continue
        inner, optional = _unwrap_optional(hints[attr])
        prop = _hint_schema(inner, customize)
        description = descriptions.get(attr, "")
        if prop.get("pattern") == DURATION_PATTERN:
            description = f"{description} {DURATION_NOTE}".strip()
        description = description or prop.get("description", "")
        ordered: JSONSchema = {"description": description} if description else {}
        ordered.update({key: value for key, value in prop.items() if key != "description"})
        ordered.update(EXTRA_CONSTRAINTS.get((cls.__name__, field._rest_name), {}))
        properties[field._rest_name] = ordered
        if not optional:
            required.append(field._rest_name)
    schema: JSONSchema = {"type": "object", "description": class_summary(cls), "properties": properties}
    if required:
        schema["required"] = required
    if customize is not None:
        customize(cls.__name__, schema)
    return schema
