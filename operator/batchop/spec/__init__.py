"""The BatchJobSchedule resource model: ids, validation, the Batch request body, normalisation, diffs.

Plain typed modules with no Kubernetes or Azure client in them, so the operator, its admission
webhook and the offline tools (``batchop render``, ``batchop convert``) share one definition:

- :mod:`batchop.spec.naming`: Batch schedule ids derived from namespace and name.
- :mod:`batchop.spec.validation`: every check that runs before any Azure call.
- :mod:`batchop.spec.images`: retired Marketplace images and the one suggested instead.
- :mod:`batchop.spec.blobrefs`: blob references, their places, shapes and output paths, checked offline.
- :mod:`batchop.spec.sas_lifetime`: how long minted SAS must live and when they are renewed.
- :mod:`batchop.spec.mapping`: the Batch create / PATCH bodies for a resource's spec.
- :mod:`batchop.spec.normalize`, :mod:`batchop.spec.diff`: desired vs observed, compared as Batch stores them.
- :mod:`batchop.spec.conversion`, :mod:`batchop.spec.importer`: job-schedule JSON and live schedules into
  resources.
"""
