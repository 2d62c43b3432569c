"""batchop: Azure Batch job schedules as Kubernetes resources.

The package is layered; ``docs/architecture.md`` draws the layers and the import contracts in
``.importlinter`` keep them: :mod:`batchop.api` (the contract) and :mod:`batchop.spec` (pure functions)
at the bottom, the clients (:mod:`batchop.batch`, :mod:`batchop.kube`, :mod:`batchop.blob`) above them,
:mod:`batchop.controller` and :mod:`batchop.admission` above those, and :mod:`batchop.cli` on top.
"""

__version__ = "0.1.0"
