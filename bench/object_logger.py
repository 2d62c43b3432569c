"""What kopf's per-object logging costs on each watch event, with batchop's logging set up as ``batchop run`` does.

    .venv/bin/python bench/object_logger.py
    .venv/bin/python bench/object_logger.py --tree /tmp/before      # another checkout's logging setup

For every watch event of every object kopf makes a ``LocalObjectLogger`` and, around the one watch handler batchop
registers, logs the handler's invocation at DEBUG and its success at INFO. This times those two calls, with the
logging configured by :func:`batchop.observability.logs.configure` at INFO (the operator's default), and prints
microseconds per event (the best of 5 repeats). A creation burst makes 2-4 watch events per resource.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=REPO, help="checkout whose batchop.observability.logs is used")
    parser.add_argument("--number", type=int, default=200_000)
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve() / "operator"))
    import kopf
    from kopf._core.actions.loggers import LocalObjectLogger

    from batchop.observability import logs

    logs.configure("INFO", "json")
    body = kopf.Body({"apiVersion": "azurebatch.dev/v1alpha1", "kind": "BatchJobSchedule",
                      "metadata": {"name": "a", "namespace": "n", "uid": "u"}})
    logger = LocalObjectLogger(body=body, settings=kopf.OperatorSettings())

    def event() -> None:
        logger.debug("Handler 'batchjobschedule_event' is invoked.")
        logger.info("Handler 'batchjobschedule_event' succeeded.")

    best = min(timeit.repeat(event, number=args.number, repeat=5)) / args.number
    print(f"{best * 1e6:.2f} microseconds per watch event ({args.tree})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
