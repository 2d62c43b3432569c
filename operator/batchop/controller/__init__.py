"""The controller: the only layer that knows kopf, and the one that decides what to do.

:mod:`.handlers` registers thin kopf handlers that call :class:`~batchop.controller.runtime.Runtime`, which
composes parts with one job each: :mod:`.tracking` (tracked resources, per-resource locks), :mod:`.accounts`
(account and gateway per resource), :mod:`.blobs` (SAS for blob references), :mod:`.finalizer` (the
finalizer around a create), :mod:`.outcomes` and :mod:`.events` (status and Events of an outcome),
:mod:`.pollers` / :mod:`.poller` (one status loop per account), :mod:`.retry` (drift repair, retry backoff)
and :mod:`.cleanup` (schedules of vanished resources). :mod:`.reconcile` holds the decisions (create, adopt,
patch, suspend, run now, delete) as plain functions over a gateway protocol returning an outcome;
:mod:`.status` computes the status document, :mod:`.history` the job history limits, :mod:`.runnow` the
run-now jobs. :mod:`.ports` states what the controller needs from the Kubernetes API.
"""
