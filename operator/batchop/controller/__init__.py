"""The controller: the only layer that knows kopf, and the one that decides what to do.

:mod:`.handlers` registers thin kopf handlers that call :class:`~batchop.controller.runtime.Runtime`;
the runtime holds the tracked resources, the per-account pollers and the status writer; :mod:`.reconcile`
decides (create, adopt, patch, suspend, run now, delete) over a gateway protocol and returns an outcome;
:mod:`.poller` mirrors Batch into status for every resource of an account with one listing per cycle;
:mod:`.status` computes the status document, :mod:`.history` the job history limits, :mod:`.runnow` the
run-now jobs.
"""
