"""YAML in and out for the offline tools, the way kubectl reads and writes it.

PyYAML turns an unquoted ``2016-04-29T05:30:00Z`` into a ``datetime``; kubectl keeps it a string. The
loader here keeps it a string too, so what ``batchop render`` validates is what the API server gets.
The dumper writes block style, keys in their given order, long strings unwrapped.
"""

from __future__ import annotations

from typing import Any

import yaml


class Loader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver: timestamps stay strings."""


Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class Dumper(yaml.SafeDumper):
    """Block style, insertion order, no line wrapping; multi-line strings as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, _str)


def load_all(text: str) -> list[Any]:
    """Every document of a YAML (or JSON) text; empty documents skipped."""
    return [doc for doc in yaml.load_all(text, Loader=Loader) if doc is not None]  # Loader is a SafeLoader


def dump(value: Any) -> str:
    return yaml.dump(value, Dumper=Dumper, sort_keys=False, width=1_000_000, allow_unicode=True)


def dump_all(values: list[Any]) -> str:
    return yaml.dump_all(values, Dumper=Dumper, sort_keys=False, width=1_000_000, allow_unicode=True)
