"""Exit codes of the ``batchop`` CLI: scripts may rely on them.

| code | meaning |
|---|---|
| 0 | success |
| 1 | the command ran and failed (a runtime error not covered below) |
| 2 | usage error: bad flags or arguments (argparse's own code) |
| 3 | invalid input: a spec, file or value was refused by validation; the message names the field |
| 4 | unavailable: a service the command needs (Kubernetes, Batch, Blob, a system tool) is unreachable |
| 130 | interrupted (Ctrl-C) |
"""

from __future__ import annotations

OK = 0
FAILURE = 1
USAGE = 2
INVALID = 3
UNAVAILABLE = 4
INTERRUPTED = 130


class CLIError(Exception):
    """An error that ends a CLI command with a message and a specific exit code."""

    def __init__(self, message: str, code: int = FAILURE) -> None:
        super().__init__(message)
        self.code = code
