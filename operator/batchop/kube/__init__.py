"""The operator's own Kubernetes API client and the status writer on top of it.

:mod:`.client` sends the requests the operator makes itself (status patches, Events, finalizers, Secrets,
the webhook configuration) over one bounded aiohttp connection pool, with the plain connection values it is
given: this layer does not know kopf, which keeps its own connection for watching. :mod:`.status_writer`
is the one writer of ``status`` in the process.
"""
