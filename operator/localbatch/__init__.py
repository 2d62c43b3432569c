"""A local Azure Batch service: the Batch data-plane REST API (2025-06-01) on one machine.

It is a product component (``batchop emulator``), not a test fake: the unmodified ``azure-batch``
SDK talks to it over HTTP, and it really runs the tasks as local processes. It never imports
:mod:`batchop` (the operator); shared wire facts live in :mod:`batchwire`.
"""

__version__ = "0.1.0"
