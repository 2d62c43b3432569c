"""Everything that talks to Azure Batch: one gateway per account and what it needs.

:mod:`.gateway` is the only module that sends Batch requests (through the azure-batch SDK's pipeline) and
turns failures into :class:`~batchop.batch.gateway.BatchError` reasons; :mod:`.breaker` fails requests
fast while an account gives no answer; :mod:`.credentials` resolves an account's key or Entra ID
credential and caches one gateway per account; :mod:`.settings` holds the operator's flags.
"""
