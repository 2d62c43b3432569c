"""The run-now decision: a new ``azurebatch.dev/run-now`` value starts one job now, once per value.

The job itself (its id, body and the exactly-once create) is :mod:`batchop.controller.runnow`; this decides
whether the pass starts one, and records the value handled in ``status.runNow``. A job Batch refuses for good
is recorded too (it is not retried until the value changes) and the refusal ends the pass.
"""

from __future__ import annotations

from batchop.api.names import ANNOTATION_RUN_NOW
from batchop.batch.gateway import BatchError
from batchop.controller import runnow
from batchop.controller.reconcile.outcome import Progress
from batchop.controller.reconcile.ports import ScheduleGateway
from batchop.controller.reconcile.view import ObjectView


async def run_now(obj: ObjectView, gateway: ScheduleGateway, progress: Progress) -> None:
    """Start the run-now job the annotation asks for, if any."""
    value = runnow.requested(obj.annotations, obj.status)
    if value is None:
        return
    try:
        started = await runnow.start(
            gateway,
            job_specification=progress.desired["jobSpecification"],
            schedule_id=progress.schedule_id,
            owner=obj.owner,
            uid=obj.uid,
            value=value,
        )
    except BatchError as err:
        if not err.terminal:
            raise
        progress.status["runNow"] = value  # refused for good: not retried until the value changes
        raise BatchError(
            f"{ANNOTATION_RUN_NOW}={value!r}: Batch refused the job: {err.message}",
            reason=err.reason,
            terminal=True,
            status=err.status,
            code=err.code,
            field=err.field,
        ) from err
    how = f"state {started.state}" if started.created else "created before an operator restart"
    progress.writes.append(f"runnow:{started.job_id} ({how})")
    progress.status["runNow"] = value
