#!/usr/bin/env python3
"""Count the words of every file under a directory (Python 3 standard library only).

A word is a run of ASCII letters, lower-cased, that may contain inner apostrophes: "O'er" counts as
"o'er", "'Tis" as "tis", "star-spangled" as "star" and "spangled". Files are read as UTF-8 (invalid
bytes replaced) in sorted path order, recursively; hidden files and directories are skipped.

Output: one "count<TAB>word" line per distinct word, most frequent first, ties in word order.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def input_files(root: str) -> list[str]:
    """Every non-hidden file under ``root`` (or ``root`` itself when it is a file), sorted."""
    if os.path.isfile(root):
        return [root]
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        found.extend(os.path.join(directory, name) for name in files if not name.startswith("."))
    return sorted(found)


def count_words(paths: list[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                counts.update(WORD.findall(line.lower()))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="a directory (every file under it is read) or a single file")
    parser.add_argument("--output", "-o", help="write here instead of standard output")
    args = parser.parse_args(argv)
    paths = input_files(args.input)
    if not paths:
        print(f"wordcount: no input files under {args.input!r}", file=sys.stderr)
        return 2
    counts = count_words(paths)
    lines = [f"{n}\t{word}\n" for word, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
    else:
        sys.stdout.writelines(lines)
    print(f"wordcount: {len(paths)} file(s), {sum(counts.values())} words, {len(counts)} distinct", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
