"""The contract of the BatchJobSchedule resource: what users and other tools can rely on.

:mod:`.names` holds every name (group, version, kind, finalizer, annotations, Batch metadata marks);
:mod:`.conditions` the condition types, reasons and how conditions merge; the schema modules generate
the CRD from the azure-batch SDK's models. Nothing here talks to a server.
"""
