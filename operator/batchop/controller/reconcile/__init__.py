"""Reconcile one BatchJobSchedule against Batch: the decisions, one module each.

Plain async functions over a gateway (:class:`~batchop.controller.reconcile.ports.ScheduleGateway`), so
they run in unit tests against a fake one. They never talk to Kubernetes: they return an
:class:`~batchop.controller.reconcile.outcome.Outcome` that the runtime writes into status, and say whether
and when to retry.

:func:`.apply.apply` runs one pass, in this order:

1. ``spec.validation`` first; an invalid spec gives terminal ``InvalidSpec`` and no Batch request.
2. The schedule id (``spec.naming``); a changed id after creation is refused (``ScheduleIdImmutable``),
   the old schedule is left alone.
3. A resource with no recorded schedule id creates at once (:mod:`.create`); any other one starts with
   one GET. ``reconcile-policy: skip`` stops there: observe, never write.
4. Present: ours, adopted (``azurebatch.dev/adopt: "true"`` and no other object's marks) or refused with
   terminal ``AlreadyExists`` (:mod:`.adopt`, :mod:`.ownership`).
5. The normalised desired and observed forms are compared; only the changed top-level properties are
   PATCHed with ``If-Match`` (:mod:`.patch`).
6. ``spec.suspend``: disable / enable when the state differs (:mod:`.suspend`).
7. ``azurebatch.dev/run-now``: one job now, once per value (:mod:`.run_now`).

Deletion (:func:`.delete.delete`) honours ``deletionPolicy``: ``Delete`` terminates, deletes, and reports
"not done" until Batch no longer has the schedule; ``Orphan`` strips the owner marks. Nothing created, or
already gone: done at once.
"""
