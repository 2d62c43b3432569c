"""Write a benchmark's section into ``docs/performance.md`` between its own markers, with its plots.

``docs/performance.md`` is shared (the Batch service and the stack have their sections): each benchmark
replaces only the text between ``<!-- bench:NAME start -->`` and ``<!-- bench:NAME end -->``, appending
the section (markers included) at the end when it is not there yet. The section's figures
(:mod:`plots`) are redrawn from the saved results into ``img/`` beside the document and shown above the
section's first table, so the command that rewrites a table redraws its pictures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plots
from harness import RESULTS, machine_line

DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} start -->", f"<!-- bench:{name} end -->"


def replace_section(name: str, body: str, doc: Path = DOC, results: Path = RESULTS) -> None:
    """Replace (or append) the section ``name`` of ``doc`` with ``body``, its figures drawn from ``results``."""
    figures = plots.render(name, results=results, out=doc.parent / "img")
    body = with_figures(body, [(path.relative_to(doc.parent).as_posix(), alt) for path, alt in figures])
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


def with_figures(body: str, figures: list[tuple[str, str]]) -> str:
    """``body`` with a Markdown image for each (path, alt text) above its first table (at the end without one)."""
    if not figures:
        return body
    images = "\n".join(f"![{alt}]({path})" for path, alt in figures) + "\n"
    lines = body.splitlines(keepends=True)
    first_table = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if first_table is None:
        return body.rstrip() + "\n\n" + images
    return "".join(lines[:first_table]) + images + "\n" + "".join(lines[first_table:])


def section(title: str, command: str, info: dict[str, Any], table: str, notes: str) -> str:
    return (f"## {title}\n\nCommand: `{command.strip()}`\n\nMachine: {machine_line(info)}.\n\n"
            f"{table}\n\n{notes.strip()}\n")
