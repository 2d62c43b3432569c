"""Where the local dev stack leaves its environment, and how that file reads.

``batchop dev up`` (:mod:`devstack.stack`) writes ``<dir>/env``: ``export NAME='value'`` lines with
``KUBECONFIG`` and the operator's defaults (the local Batch account, Azurite's connection string).
Commands run next to the stack (``batchop blob``) read their storage defaults from it. The location and
the format are defined here, below both, so the reader needs no part of the dev stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

DEFAULT_DIR: Final = Path(".batchop-dev")
"""The stack's state directory when ``--dir`` is not given."""
ENV_FILE: Final = "env"
"""The env file's name inside the state directory."""


def env_file(state_dir: Path | None = None) -> Path:
    """The env file of the stack whose state directory is ``state_dir`` (default :data:`DEFAULT_DIR`)."""
    return (DEFAULT_DIR if state_dir is None else state_dir) / ENV_FILE


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (optional ``export``, optional quotes) of an env file; {} if it is absent."""
    values: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return values
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):]
        name, sep, value = line.partition("=")
        if sep:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[name.strip()] = value
    return values
