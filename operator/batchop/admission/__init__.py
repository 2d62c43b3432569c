"""The admission webhook: the operator's own validation, run by the API server before an object is stored.

:mod:`.webhook` judges a BatchJobSchedule with :mod:`batchop.spec.validation` (the same checks the
controller and ``batchop render`` run), serves them through kopf's webhook server, issues or loads its
certificate and registers the ``ValidatingWebhookConfiguration``; :mod:`.options` holds its command-line
flags apart, so that building the CLI parser does not import kopf.
"""
