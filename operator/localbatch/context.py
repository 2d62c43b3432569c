"""What the API layer needs from the running service, as types: the seam between the two.

The HTTP layer (:mod:`localbatch.server`, :mod:`localbatch.admin`, the ``api_*`` handlers and
:mod:`localbatch.responses`) reads the store, the clock and the configuration, and notifies the engine.
It sees them only through :class:`ServiceContext` and :class:`EngineProtocol`, defined here, so that it
never imports :mod:`localbatch.service`, which composes the server and the engine: the dependencies point
one way (service -> server -> handlers -> context), without an import cycle.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from localbatch.auth import AccountKeys, Authenticator
from localbatch.clock import VirtualClock
from localbatch.faults import FaultConfig
from localbatch.quotas import AccountLimits
from localbatch.store import Store
from localbatch.tokens import TokenIssuer
from localbatch.windows import DEFAULT_DELETING_SECONDS, DEFAULT_TERMINATING_SECONDS, Windows

# A fixed, documented development key (like Azurite's): base64 of 64 bytes. Never use it in Azure.
DEFAULT_KEY = base64.b64encode(b"batchop-local-batch-service-development-key-not-a-secret-0123456").decode()
DEFAULT_SECONDARY_KEY = base64.b64encode(b"batchop-local-batch-service-secondary-dev-key-not-a-secret-01234").decode()


class EngineProtocol(Protocol):
    """What the API layer calls on the engine: synchronous notifications after it changed the store,
    and the task counts of a job (the engine owns the tasks)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def schedule_changed(self, key: str) -> None: ...
    def terminate_schedule(self, key: str) -> None: ...
    def delete_schedule(self, key: str) -> None: ...
    def job_created(self, key: str) -> None: ...
    def terminate_job(self, key: str, reason: str = "UserTerminate") -> None: ...
    def delete_job(self, key: str) -> None: ...
    def delete_pool(self, key: str) -> None: ...
    def counts(self, job_key: str) -> dict[str, Any]: ...


@dataclass
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 8090
    account: str = "devbatch"
    key: str = DEFAULT_KEY
    time_scale: float = 1.0
    execute: bool = True
    no_execute_exit_code: int = 0
    work_dir: Path | None = None
    state_file: Path | None = None
    fault_rate: float = 0.0
    fault_codes: list[str] = field(default_factory=lambda: ["429", "503"])
    latency_ms: float = 0.0
    retry_after: int = 1
    tls: bool = False
    job_quota: int = 0
    """Old form of ``active_jobs_and_schedules_quota`` (``--job-quota``): 0 = unlimited."""
    secondary_key: str = DEFAULT_SECONDARY_KEY
    dedicated_core_quota: int | None = None
    """Dedicated cores the account may use (None: unlimited); beyond it pools get ``resizeErrors``."""
    low_priority_core_quota: int | None = None
    active_jobs_and_schedules_quota: int | None = None
    """Active jobs + job schedules allowed (None: unlimited); beyond it 409 ActiveJobAndScheduleQuotaReached."""
    terminating_window: float = DEFAULT_TERMINATING_SECONDS
    """Batch seconds a job or schedule stays ``terminating`` (:mod:`localbatch.windows`)."""
    deleting_window: float = DEFAULT_DELETING_SECONDS
    state_debounce: float = 0.2
    seed: int | None = None
    engine_factory: Callable[..., EngineProtocol] | None = None
    """Builds the engine (keyword arguments of ``Engine``); default ``localbatch.engine.Engine``."""


class ServiceContext(Protocol):
    """The running service as the request handlers use it (:class:`localbatch.service.Service` is one)."""

    @property
    def config(self) -> ServiceConfig: ...
    @property
    def store(self) -> Store: ...
    @property
    def clock(self) -> VirtualClock: ...
    @property
    def engine(self) -> EngineProtocol: ...
    @property
    def base_url(self) -> str: ...
    @property
    def work_dir(self) -> Path:
        """Where the nodes' directories are (``nodes/<nodeId>/``): the file API reads task output there."""
        ...
    @property
    def faults(self) -> FaultConfig: ...
    @property
    def rng(self) -> random.Random: ...
    @property
    def authenticator(self) -> Authenticator: ...
    @property
    def tokens(self) -> TokenIssuer | None: ...
    @property
    def counts(self) -> MutableMapping[str, Any]: ...
    @property
    def limits(self) -> AccountLimits:
        """Core quotas, the active jobs and schedules quota, injected allocation failures."""
        ...
    @property
    def windows(self) -> Windows:
        """How long jobs and schedules stay terminating and deleting."""
        ...
    @property
    def keys(self) -> AccountKeys:
        """The account's primary and secondary keys."""
        ...

    def count(self, operation: str, status: int, *, next_page: bool = False) -> None: ...
    def counts_json(self) -> dict[str, Any]: ...
    def check_quota(self) -> None: ...
    def info(self) -> dict[str, Any]: ...
    async def reset(self) -> None: ...


SERVICE_KEY: web.AppKey[ServiceContext] = web.AppKey("localbatch.service")
"""Where the application keeps the :class:`ServiceContext` its handlers serve."""
