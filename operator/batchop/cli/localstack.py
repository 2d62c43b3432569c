"""The local stack's packages, ``devstack`` and ``localbatch``: loaded only by the commands that run them.

The operator image carries ``batchop`` and ``batchwire`` only; ``batchop dev``, ``batchop demo`` and
``batchop emulator`` need the two packages a source checkout adds. Their command modules import them inside
the function that runs the command, never at module import (building the parser imports every command
module, ``batchop run`` included), within :func:`required`, which turns a missing package into exit code
:data:`batchwire.exitcodes.UNAVAILABLE` and a message that names the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from batchwire.exitcodes import UNAVAILABLE, CLIError

PACKAGES = ("devstack", "localbatch")
MISSING = (
    "this command needs the local stack (the devstack and localbatch packages), which this installation does not "
    "include: install batchop from a source checkout: pip install -e ."
)
"""What a command of the local stack says when the packages are missing (after ``batchop COMMAND:``)."""


@contextmanager
def required() -> Iterator[None]:
    """Import the local stack's modules inside this block: a missing package of it raises :class:`CLIError`
    (:data:`MISSING`, exit code 4); any other import error is a fault and propagates as it is."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in PACKAGES:
            raise
        raise CLIError(MISSING, UNAVAILABLE) from None


def available() -> bool:
    """Whether both packages of the local stack can be imported (without importing them)."""
    from importlib.util import find_spec

    return all(find_spec(name) is not None for name in PACKAGES)
