"""The contract of the BatchJobSchedule resource: what users and other tools can rely on.

:mod:`.names` holds every name (group, version, kind, finalizer, annotations, Batch metadata marks);
:mod:`.conditions` the condition types, reasons and how conditions merge; :mod:`.types` the documents'
shapes; :mod:`.patterns`, :mod:`.legacy` and :mod:`.cel_rules` the formats, refused legacy names and
CEL rules the CRD declares. :mod:`.schema` reads the CRD's ``spec`` schema at run time from a file the
generator (:mod:`.crdgen` with :mod:`.crd` and :mod:`.sdkmodels`, built on the azure-batch SDK's models)
writes; only the generator and its tests load the SDK. Nothing here talks to a server.
"""
