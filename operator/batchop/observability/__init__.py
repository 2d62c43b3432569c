"""What the operator tells its operators: logs, Prometheus metrics, and its own memory upkeep.

:mod:`.logs` configures logging (on :mod:`batchwire.logs`, with kopf's routine lines at DEBUG);
:mod:`.metrics` serves the metrics and instruments the Batch pipeline, with controller-runtime's reconcile,
workqueue and REST client metrics under their usual names (:mod:`.conventions`); :mod:`.memory` keeps the process
small (TLS read buffers, returning freed heap to the OS).
"""
