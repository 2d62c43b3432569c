"""Azure Batch wire-format facts shared by the operator and the local Batch service.

Neither :mod:`batchop` nor :mod:`localbatch` owns these: they are properties of the Azure Batch
REST API (2025-06-01) itself, so both sides use one definition.
"""

API_VERSION = "2025-06-01"
