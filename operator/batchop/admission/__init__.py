"""The admission webhooks: the operator's own validation, and its finalizer on each new object, run by the API
server before an object is stored.

:mod:`.webhook` judges a BatchJobSchedule with :mod:`batchop.spec.validation` (the same checks the
controller and ``batchop render`` run), puts the operator's finalizer on a new one, serves both through kopf's
webhook server, issues or loads its certificate and registers the Validating- and
``MutatingWebhookConfiguration``; :mod:`.options` holds its command-line flags apart, so that building the CLI
parser does not import kopf.
"""
