"""Job history: keep the last N successful and M failed jobs of each schedule in Batch, like a CronJob.

``spec.successfulJobsHistoryLimit`` (default 3) and ``spec.failedJobsHistoryLimit`` (default 1) count the
*completed* jobs of a schedule, its own (``{scheduleId}:job-N``) and its run-now jobs
(:mod:`batchop.controller.runnow`);
older completed jobs are deleted in Batch (``DELETE /jobs/{id}``). Jobs still running are never deleted, nor
is the job Batch names as the schedule's most recent one (so ``status.recentJob`` stays readable; with a limit
of 0 it goes when the next job starts). ``status.recentJobs`` lists the kept jobs, newest first, with result,
start, end, task counts and the output location (from the job manager task's ``outputFiles``, SAS removed).

API budget: no request per schedule per cycle. The account poller lists jobs once per cycle anyway; this module
turns that listing into ``state ne 'completed' or stateTransitionTime ge <watermark>``: the running jobs plus
the ones that finished since the previous listing, in the same request (:meth:`History.list_jobs`). The
watermark is the later of the newest transition listed and Batch's clock when the previous listing started,
minus a 5-minute margin: when nothing changes it still moves, so a steady account lists its running jobs only,
not again every job that completed in the 5 minutes before the last change (at 10,000 schedules created
together that was 10 pages of jobs every cycle, forever). The first
listing after a start, after a new schedule is tracked, and every ``resync_cycles`` cycles lists all jobs (a
few pages once; history limits keep the account small). Beyond that: one ``taskcounts`` request per job when
it completes (its result), one ``DELETE`` per job pushed out of the limits; results already shown in
``status.recentJobs`` are reused after an operator restart.

:func:`plan` (what to keep and delete) and :func:`output_location` are pure; :class:`History` is the
per-account state the poller keeps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from batchop.api.types import KeptJob, OutputLocation
from batchop.batch.gateway import BatchError
from batchop.controller import runnow
from batchop.controller import status as st
from batchop.controller.turns import chunks
from batchop.spec.conversion import blob_location
from batchwire import timestamps
from batchwire.redact import strip_sas

log = logging.getLogger(__name__)

SUCCESSFUL_DEFAULT = 3
FAILED_DEFAULT = 1
SCHEDULED_INFIX = ":job-"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KEPT_FIELDS = (
    "id", "state", "creationTime", "startTime", "endTime", "terminateReason", "result", "taskCounts", "poolId",
)


@dataclass(frozen=True)
class Limits:
    """How many completed jobs of a schedule to keep, by result."""

    successful: int = SUCCESSFUL_DEFAULT
    failed: int = FAILED_DEFAULT


class HistoryGateway(Protocol):
    """The Batch calls of the history limits (:class:`batchop.batch.gateway.Gateway` has them all)."""

    async def list_jobs(
        self, *, filter: str | None = None, select: list[str] | None = None
    ) -> list[dict[str, Any]]: ...
    async def task_counts(self, job_id: str) -> dict[str, Any] | None: ...
    async def delete_job(self, job_id: str) -> None: ...


class Member(Protocol):
    """A resource whose schedule's jobs are kept (:class:`batchop.controller.tracking.Tracked`)."""

    @property
    def schedule_id(self) -> str | None: ...
    @property
    def schedule_key(self) -> str:
        """``schedule_id`` in lower case, "" when none."""
        ...
    @property
    def policy(self) -> str: ...
    @property
    def deleting(self) -> bool: ...
    @property
    def history(self) -> Limits | None: ...
    @property
    def key(self) -> tuple[str, str]: ...

    stepped: Inputs | None
    """What :meth:`History.step` last judged the member's jobs from, when that left nothing to do (None: judge)."""


Inputs = tuple[tuple[Any, ...], tuple[Any, ...]]
"""Values, and objects kept while they do not change (:func:`same_inputs`)."""


def same_inputs(kept: Inputs | None, inputs: Inputs) -> bool:
    """Whether ``inputs`` are those ``kept``: equal values and equal objects.

    The objects are those the poller, the history and the status writer keep while they do not change, so at
    rest each is the very object kept, and the comparison (in C: a tuple's items are compared by identity
    first) never walks one. An object replaced by an equal one compares equal too, which is as right: the
    result is computed from values. (A generator of ``is`` tests took a fifth of a cycle at rest.)"""
    return kept is not None and kept == inputs


def limits_of(spec: Mapping[str, Any] | None) -> Limits:
    """The history limits of a resource's ``spec`` (CronJob's defaults when absent)."""
    spec = spec or {}

    def number(name: str, default: int) -> int:
        value = spec.get(name)
        return max(0, int(value)) if isinstance(value, int) and not isinstance(value, bool) else default

    return Limits(number("successfulJobsHistoryLimit", SUCCESSFUL_DEFAULT), number("failedJobsHistoryLimit",
                                                                                   FAILED_DEFAULT))


def schedule_of(job_id: str, run_now_prefixes: Mapping[str, str]) -> str | None:
    """The (lower-case) schedule id a job belongs to: ``{sid}:job-N``, or a run-now job whose prefix is known
    (``run_now_prefixes``: run-now prefix -> schedule id); None for any other job."""
    key = job_id.lower()
    head, sep, number = key.rpartition(SCHEDULED_INFIX)
    if sep and head and number.isdigit():
        return head
    cut = key.rfind(runnow.INFIX)
    if cut > 0:
        return run_now_prefixes.get(key[: cut + len(runnow.INFIX)])
    return None


def _time(value: Any) -> datetime:
    if not value:
        return _EPOCH
    try:
        return timestamps.parse(str(value))
    except ValueError:
        return _EPOCH


def _number(job_id: str) -> int:
    tail = job_id.rpartition(SCHEDULED_INFIX)[2]
    return int(tail) if tail.isdigit() else -1


def newest_first(jobs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Jobs ordered by creation time, newest first (job number, then id, break ties)."""
    return sorted(jobs, key=lambda j: (_time(j.get("creationTime")), _number(str(j.get("id"))), str(j.get("id"))),
                  reverse=True)


@dataclass
class Plan:
    """What :func:`plan` decided: the jobs kept (newest first) and the ids to delete."""

    keep: list[Mapping[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)


def plan(
    jobs: Iterable[Mapping[str, Any]],
    results: Mapping[str, str | None],
    limits: Limits,
    protect: Collection[str] = (),
) -> Plan:
    """Keep every job not completed, every completed job whose result is not known yet, the newest
    ``limits.successful`` successes and ``limits.failed`` failures, and the ``protect``-ed ids (lower case);
    delete the other completed jobs. ``results`` maps lower-case job ids to ``success`` / ``failure``."""
    out = Plan()
    counts = {"success": 0, "failure": 0}
    for job in newest_first(jobs):
        key = str(job.get("id")).lower()
        if job.get("state") in ("deleting",):
            continue
        result = results.get(key)
        if job.get("state") != "completed" or result not in counts:
            out.keep.append(job)
            continue
        counts[str(result)] += 1
        limit = limits.successful if result == "success" else limits.failed
        if counts[str(result)] <= limit or key in protect:
            out.keep.append(job)
        else:
            out.delete.append(str(job.get("id")))
    return out



def output_location(job_specification: Mapping[str, Any] | None, result: str | None = None) -> dict[str, Any] | None:
    """Where a job of this specification puts its output: ``{container, path, url}`` (SAS removed) from the job
    manager task's first ``outputFiles`` destination whose upload condition matches ``result`` (None when none
    does; for a job without a result yet, the first destination)."""
    task = (job_specification or {}).get("jobManagerTask") or {}
    wanted = ("taskfailure", "taskcompletion") if result == "failure" else ("tasksuccess", "taskcompletion")
    found: list[tuple[bool, dict[str, Any]]] = []
    for output in task.get("outputFiles") or []:
        if not isinstance(output, Mapping):
            continue
        destination = output.get("destination") or {}
        condition = str(((output.get("uploadOptions") or {}).get("uploadCondition")) or "tasksuccess").lower()
        container = destination.get("container")
        blob = destination.get("blob")
        location: dict[str, Any] | None = None
        if isinstance(container, Mapping) and container.get("containerUrl"):
            url = strip_sas(str(container["containerUrl"])).rstrip("/")
            path = str(container.get("path") or "").strip("/")
            parsed = blob_location(url)
            name = parsed.container if parsed is not None else url.rsplit("/", 1)[-1]
            location = {"container": name, "path": path, "url": f"{url}/{path}" if path else url}
        elif isinstance(blob, Mapping) and blob.get("container"):
            location = {"container": str(blob["container"]), "path": str(blob.get("path") or "").strip("/")}
        if location is not None:
            if not location.get("path"):
                location.pop("path")
            found.append((condition in wanted, location))
    for matches, location in found:
        if matches:
            return location
    return found[0][1] if found and result is None else None  # nothing is uploaded for this result


def kept_job(
    job: Mapping[str, Any], result: str | None, counts: Mapping[str, Any] | None, output: Mapping[str, Any] | None
) -> KeptJob:
    """One ``status.recentJobs`` item."""
    base: Mapping[str, Any] = st.recent_job(job, counts) or {}
    item = cast(KeptJob, {k: base[k] for k in KEPT_FIELDS if base.get(k) is not None})
    if result and job.get("state") == "completed":
        item["result"] = result
    if output:
        item["output"] = cast(OutputLocation, dict(output))
    return item


class History:
    """Per-account job book and history enforcement (see the module docstring). Used by the poller."""

    def __init__(self, *, margin: timedelta = timedelta(minutes=5), resync_cycles: int = 120,
                 count_fetches: int = 20) -> None:
        self.margin = margin
        self.resync_cycles = resync_cycles
        self.count_fetches = count_fetches
        self.jobs: dict[str, dict[str, Any]] = {}  # job id (lower) -> wire job, jobs of tracked schedules only
        self.owner: dict[str, str] = {}  # job id (lower) -> schedule id (lower)
        self.results: dict[str, tuple[str | None, dict[str, Any] | None]] = {}
        self.recent: dict[tuple[str, str], list[KeptJob]] = {}
        self.watermark: datetime | None = None
        self.listed_at: datetime | None = None  # Batch's clock when the last ingested listing started
        self.deleted: list[str] = []
        self._schedules: set[str] = set()
        self._prefixes: dict[str, str] = {}
        self._cycles = 0
        self._full_pending = True
        self._index: dict[str, list[dict[str, Any]]] | None = None
        self._run_now: dict[str, list[dict[str, Any]]] | None = None
        self._job_keys: dict[str, list[str]] = {}  # schedule id (lower) -> its jobs' ids (lower), with _index
        self._changes: dict[str, int] = {}  # schedule id (lower) -> changes of its jobs in the book

    # -- the listing ------------------------------------------------------------------------------------

    def list_filter(self, schedule_ids: Iterable[str]) -> str | None:
        """The ``$filter`` of this cycle's job listing; None means a full listing."""
        ids = {s.lower() for s in schedule_ids if s}
        if self.watermark is None or ids - self._schedules or self._cycles >= self.resync_cycles:
            self._full_pending = True  # cleared only by a full listing that was ingested
        full = self._full_pending
        if ids != self._schedules:  # the same schedules as the last cycle's (at rest): their prefixes too
            self._schedules = ids
            self._prefixes = {runnow.job_prefix(s): s for s in ids}
        if full or self.watermark is None:  # no watermark: the listing is full anyway
            return None
        mark = max(self.watermark, self.listed_at) if self.listed_at is not None else self.watermark
        since = timestamps.format(mark - self.margin)
        return f"state ne 'completed' or stateTransitionTime ge datetime'{since}'"

    async def list_jobs(
        self, gateway: HistoryGateway, schedule_ids: Iterable[str], *, select: list[str]
    ) -> list[dict[str, Any]]:
        """List the jobs of this cycle (one paged request) and remember those of tracked schedules."""
        query = self.list_filter(schedule_ids)
        clock = getattr(gateway, "batch_now", None)  # Batch's clock (the gateway's), if it keeps one
        started = clock() if callable(clock) else None
        listed = await gateway.list_jobs(filter=query, select=select)
        self.ingest(listed, full=query is None)
        if isinstance(started, datetime):
            self.listed_at = started
        return listed

    def ingest(self, listed: Sequence[Mapping[str, Any]], *, full: bool) -> None:
        """Record a listing. A full one replaces the book; an incremental one holds every job not completed, so
        a job the book has as running and the listing lacks is gone (deleted).

        A job listed again unchanged (every job, each cycle, within the margin after many complete at once)
        keeps the book's copy, and the index of jobs by schedule is kept: at 10,000 schedules, copying every
        listed job made 10,000 new long-lived dictionaries a cycle, which the garbage collector then walked in
        full collections."""
        self._cycles = 0 if full else self._cycles + 1
        if full:
            self._full_pending = False
        seen: set[str] = set()
        changed: dict[str, dict[str, Any]] = {}
        for job in listed:
            jid = str(job.get("id") or "")
            stamp = _time(job.get("stateTransitionTime") or job.get("creationTime"))
            if stamp > _EPOCH and (self.watermark is None or stamp > self.watermark):
                self.watermark = stamp
            sid = schedule_of(jid, self._prefixes)
            if sid is not None and sid in self._schedules:
                key = jid.lower()
                seen.add(key)
                if self.jobs.get(key) != job:  # a job listed again unchanged keeps the book's copy
                    changed[key] = job if isinstance(job, dict) else dict(job)  # the poller holds the same
                    self.owner[key] = sid
        if full:
            gone = [k for k in self.jobs if k not in seen]
        else:
            gone = [k for k, j in self.jobs.items() if k not in seen and j.get("state") != "completed"]
            gone += [k for k in self.jobs if self.owner.get(k) not in self._schedules]
        for key in gone:
            self._forget(key)
        if changed:
            self.jobs.update(changed)
            self._index = None
            for key in changed:
                self._changed(self.owner.get(key, ""))

    def _changed(self, sid: str) -> None:
        self._changes[sid] = self._changes.get(sid, 0) + 1

    def _forget(self, key: str) -> None:
        self._index = None
        self._changed(self.owner.get(key, ""))
        self.jobs.pop(key, None)
        self.owner.pop(key, None)
        self.results.pop(key, None)

    def jobs_of(self, schedule_id: str) -> list[dict[str, Any]]:
        """The known jobs of a schedule (an index rebuilt only after the book changed)."""
        return list(self._indexes()[0].get(schedule_id.lower(), ()))

    def _indexes(self) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
        """The book's jobs by schedule, and its run-now jobs by schedule (rebuilt after the book changed)."""
        if self._index is None or self._run_now is None:
            index: dict[str, list[dict[str, Any]]] = {}
            run_now: dict[str, list[dict[str, Any]]] = {}
            job_keys: dict[str, list[str]] = {}
            for key, job in self.jobs.items():
                sid = self.owner.get(key, "")
                index.setdefault(sid, []).append(job)
                job_keys.setdefault(sid, []).append(key)
                if runnow.is_run_now_job(key, sid):
                    run_now.setdefault(sid, []).append(job)
            self._index, self._run_now, self._job_keys = index, run_now, job_keys
        return self._index, self._run_now

    def recent_job_id(
        self, schedule_id: str | None, schedule: Mapping[str, Any] | None, key: str | None = None
    ) -> str | None:
        """The schedule's most recent job: Batch's ``executionInfo.recentJob``, or a newer run-now job
        (``key``: the schedule id in lower case, when the caller has it)."""
        rid = (((schedule or {}).get("executionInfo") or {}).get("recentJob") or {}).get("id")
        if not schedule_id:
            return rid
        run_now = self._indexes()[1].get(key or schedule_id.lower())
        if not run_now:
            return rid
        newest = newest_first(run_now)[0]
        current = self.jobs.get(rid.lower()) if rid else None
        if rid and current is None:
            return rid  # Batch created it after the listing: it is the newest
        if current is None or _time(newest.get("creationTime")) > _time(current.get("creationTime")):
            return str(newest["id"])
        return rid

    # -- enforcement ------------------------------------------------------------------------------------

    async def step(
        self,
        gateway: HistoryGateway,
        members: Sequence[Member],
        schedules: Mapping[str, Mapping[str, Any]],
        *,
        counts: Mapping[str, Mapping[str, Any]],
        previous: Callable[[Any], Mapping[str, Any]],
        owned: Callable[[Mapping[str, Any], Any], bool],
        recent_job: Callable[[str, Mapping[str, Any] | None], str | None] | None = None,
    ) -> None:
        """Judge newly completed jobs, delete those beyond the limits, compute ``recentJobs`` per member.

        ``counts``: task counts the poller already has (job id lower -> counts); ``previous(member)`` the
        member's last status; ``owned(schedule, member)`` whether the operator may write to that schedule;
        ``recent_job(schedule_id, schedule)``: :meth:`recent_job_id` as the caller already found it this cycle.
        """
        budget = self.count_fetches  # task-count reads left this cycle, shared by all members
        find = recent_job or self.recent_job_id
        async for chunk in chunks(members):
            for member in chunk:
                if not member.schedule_id:
                    continue
                sid = str(member.schedule_id)
                key = member.schedule_key
                schedule = schedules.get(key)
                rid = find(sid, schedule)
                if member.stepped is not None and same_inputs(member.stepped,
                                                              self._inputs(member, key, schedule, counts, rid)):
                    continue
                member.stepped = None
                book = self._changes.get(key, 0)
                budget = await self._judge(gateway, sid, previous(member), counts, budget, schedule)
                if self._changes.get(key, 0) != book:  # a job gone meanwhile left the book: ask again
                    rid = self.recent_job_id(sid, schedule)
                limits = member.history or Limits()
                decided = plan(self.jobs_of(sid), _Results(self.results), limits, {rid.lower()} if rid else ())
                if _may_write(member, schedule, owned):
                    await self._delete(gateway, sid, decided.delete, limits)
                kept = self._kept(decided.keep, counts, (schedule or {}).get("jobSpecification"))
                if self.recent.get(member.key) != kept:  # unchanged: keep the list already held (see ingest)
                    self.recent[member.key] = kept
                if not decided.delete and self._judged(sid):
                    member.stepped = self._inputs(member, key, schedule, counts, rid)

    def _inputs(
        self, member: Member, key: str, schedule: Mapping[str, Any] | None, counts: Mapping[str, Mapping[str, Any]],
        rid: str | None,
    ) -> Inputs:
        """What a member's step is computed from once every completed job of its schedule is judged: the changes
        of the schedule's jobs in the book, its recent job, the limits, and the job specification and the task
        counts of its jobs (objects kept while they do not change: :func:`same_inputs`).

        Why: at rest every member's jobs were judged, planned and turned into ``recentJobs`` every cycle, only to
        find them unchanged. A step that judged everything and deleted nothing gives the same result from the
        same inputs, so the next cycles skip it until one of them moves."""
        self._indexes()
        values = (self._changes.get(key, 0), rid, member.history)
        spec = (schedule or {}).get("jobSpecification")
        return values, (spec, *map(counts.get, self._job_keys.get(key, ())))

    def _judged(self, sid: str) -> bool:
        """Whether every completed job of the schedule has its result (one left unjudged is judged in a later
        cycle, within that cycle's budget of task-count reads)."""
        return all(job.get("state") != "completed" or self.results.get(str(job.get("id")).lower(), (None, None))[0]
                   is not None for job in self._indexes()[0].get(sid.lower(), ()))

    async def _judge(
        self,
        gateway: HistoryGateway,
        sid: str,
        shown_status: Mapping[str, Any],
        counts: Mapping[str, Mapping[str, Any]],
        budget: int,
        schedule: Mapping[str, Any] | None = None,
    ) -> int:
        """Record the result of each completed job of the schedule not judged yet: from the counts the poller
        has, from ``status.recentJobs`` (after a restart), else one ``taskcounts`` read within ``budget``.
        Returns the budget left. ``schedule`` gives listed jobs their ``onTaskFailure`` (the result of a job whose
        exit conditions let failed tasks through, :func:`batchop.controller.status.job_result`)."""
        shown = {str(i.get("id")).lower(): i for i in (shown_status.get("recentJobs") or []) if i.get("result")}
        for job in self.jobs_of(sid):
            key = str(job["id"]).lower()
            if job.get("state") != "completed" or self.results.get(key, (None, None))[0] is not None:
                continue
            found = counts.get(key)
            if found is None and key in shown:
                self.results[key] = (str(shown[key]["result"]), shown[key].get("taskCounts"))
                continue
            if found is None and st.job_result(job, None) is None:
                if budget <= 0:
                    continue
                budget -= 1
                found = await gateway.task_counts(str(job["id"]))
                if found is None:  # gone meanwhile
                    self._forget(key)
                    continue
            judged = st.with_failure_mode(job, schedule) or job
            self.results[key] = (st.job_result(judged, found), dict(found) if found else None)
        return budget

    async def _delete(self, gateway: HistoryGateway, sid: str, job_ids: Sequence[str], limits: Limits) -> None:
        """Delete the jobs pushed out of the limits (already gone or being deleted counts as done)."""
        for job_id in job_ids:
            try:
                await gateway.delete_job(job_id)
            except BatchError as err:
                if err.status not in (404, 409):
                    log.warning("could not delete job %s of %s (history limits): %s", job_id, sid, err)
                    continue
            log.info("deleted job %s of schedule %s (history limits %s)", job_id, sid, limits)
            self.deleted.append(job_id)
            self._forget(job_id.lower())

    def _kept(
        self, keep: Sequence[Mapping[str, Any]], counts: Mapping[str, Mapping[str, Any]], job_spec: Any
    ) -> list[KeptJob]:
        """The ``status.recentJobs`` items of the kept jobs."""
        items = []
        for kept in keep:
            key = str(kept["id"]).lower()
            result, known = self.results.get(key, (None, None))
            job_counts: Mapping[str, Any] | None = known or counts.get(key)
            items.append(kept_job(kept, result, job_counts, output_location(job_spec, result)))
        return items


class _Results(Mapping[str, str | None]):
    """:attr:`History.results` read as job id -> result, without copying it: a copy per member made a cycle's
    cost grow with the square of the number of schedules (N copies of an N-entry book)."""

    def __init__(self, book: Mapping[str, tuple[str | None, dict[str, Any] | None]]) -> None:
        self._book = book

    def __getitem__(self, key: str) -> str | None:
        return self._book[key][0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._book)

    def __len__(self) -> int:
        return len(self._book)


def _may_write(
    member: Member, schedule: Mapping[str, Any] | None, owned: Callable[[Mapping[str, Any], Any], bool]
) -> bool:
    """Whether the history limits may delete jobs of the member's schedule: a managed schedule of ours."""
    return (
        schedule is not None
        and member.policy != "skip"
        and not member.deleting
        and schedule.get("state") in ("active", "disabled", "completed")
        and owned(schedule, member)
    )
