"""The Kubernetes API client of the operator (aiohttp, no client library) and the status writer.

One client with a bounded connection pool for everything the operator writes itself: status patches,
Events, finalizers, Secrets, the webhook configuration. kopf keeps its own connection for watching.
"""
