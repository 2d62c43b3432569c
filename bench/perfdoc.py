"""Write a benchmark's section into ``docs/performance.md`` between its own markers.

``docs/performance.md`` is shared (the Batch service and the stack have their sections): each benchmark
replaces only the text between ``<!-- bench:NAME start -->`` and ``<!-- bench:NAME end -->``, appending
the section (markers included) at the end when it is not there yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import machine_line

DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} start -->", f"<!-- bench:{name} end -->"


def replace_section(name: str, body: str, doc: Path = DOC) -> None:
    """Replace (or append) the section ``name`` of ``doc`` with ``body``."""
    start, end = markers(name)
    text = doc.read_text() if doc.exists() else "# Performance\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)


def section(title: str, command: str, info: dict[str, Any], table: str, notes: str) -> str:
    return (f"## {title}\n\nCommand: `{command.strip()}`\n\nMachine: {machine_line(info)}.\n\n"
            f"{table}\n\n{notes.strip()}\n")
