"""The local Batch service as one object: configuration, store, clock, engine, HTTP server.

:class:`Service` composes the parts: it binds the aiohttp application (:mod:`localbatch.server`) to
a host and port, serving itself to the handlers as their :class:`~localbatch.context.ServiceContext`;
restores the state file; starts the engine (:class:`localbatch.engine.Engine`, or the configured
``engine_factory``) with the service's own URL; and on :meth:`Service.stop` stops accepting requests,
stops the engine (killing task processes) and writes the state.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import ssl
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from batchwire import containers
from localbatch import container_tasks, persistence, tlscert
from localbatch.auth import AccountKeys, Authenticator
from localbatch.clock import VirtualClock
from localbatch.context import EngineProtocol, ServiceConfig
from localbatch.engine import Engine
from localbatch.faults import FaultConfig, parse_codes
from localbatch.quotas import AccountLimits
from localbatch.server import build_app
from localbatch.store import Store
from localbatch.tokens import TokenIssuer
from localbatch.windows import Windows

log = logging.getLogger("localbatch.service")


@dataclass
class OperationCounts:
    total: int = 0
    by_status: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    next_pages: int = 0
    """Requests for a later page of a listing (``$skiptoken``): ``total - next_pages`` listings started."""


class Service:
    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        try:
            key_bytes = base64.b64decode(config.key, validate=True)
        except ValueError:
            raise ValueError("--key must be base64 (for example the output of: openssl rand -base64 64)") from None
        if not key_bytes:
            raise ValueError("--key must not be empty")
        self.key_bytes = key_bytes
        self.store = Store()
        self.clock = VirtualClock(config.time_scale)
        self.faults = FaultConfig(
            rate=config.fault_rate,
            codes=parse_codes(config.fault_codes) or ["429", "503"],
            latency_ms=config.latency_ms,
            retry_after=config.retry_after,
        )
        self.rng = random.Random(config.seed)
        self.counts: dict[str, OperationCounts] = defaultdict(OperationCounts)
        self.work_dir = Path(config.work_dir or tempfile.mkdtemp(prefix="localbatch-")).resolve()
        self.base_url = ""
        self.tokens: TokenIssuer | None = None
        try:
            base64.b64decode(config.secondary_key, validate=True)
        except ValueError:
            raise ValueError("--secondary-key must be base64") from None
        self.keys = AccountKeys(config.key, config.secondary_key)
        self.authenticator = Authenticator(config.account, self.keys)
        self.limits = AccountLimits(
            dedicated_cores=config.dedicated_core_quota,
            low_priority_cores=config.low_priority_core_quota,
            active_jobs_and_schedules=_active_quota(config),
        )
        self.windows = Windows(config.terminating_window, config.deleting_window)
        self._job_quota_seen = config.job_quota
        self.engine: EngineProtocol = _NotStarted()
        self.cert_path: Path | None = None
        self._runner: web.AppRunner | None = None
        self._state_writer: persistence.StateWriter | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        ssl_context = None
        scheme = "http"
        if self.config.tls:
            self.cert_path, key_path = tlscert.generate(self.work_dir / "tls", self.config.host)
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(self.cert_path, key_path)
            scheme = "https"
        app = build_app(self)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=ssl_context)
        await site.start()
        port = self._bound_port(site)
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        self.base_url = f"{scheme}://{host}:{port}"
        if self.config.tls:
            self.tokens = TokenIssuer(self.key_bytes, self.base_url)
            self.authenticator.tokens = self.tokens
        if self.config.state_file is not None:
            persistence.load(self.config.state_file, self.store, self.clock)
        await self._start_engine()
        if self.config.state_file is not None:
            self._state_writer = persistence.StateWriter(
                self.config.state_file, self.store, self.clock, self.config.state_debounce
            )
            self._state_writer.start()
        log.info("local Batch service started", extra={"endpoint": self.base_url, "account": self.config.account})

    def _bound_port(self, site: web.TCPSite) -> int:
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else self.config.port

    async def _start_engine(self) -> None:
        factory: Callable[..., EngineProtocol] = self.config.engine_factory or Engine
        self.engine = factory(
            store=self.store,
            clock=self.clock,
            work_dir=self.work_dir,
            base_url=self.base_url,
            execute=self.config.execute,
            no_execute_exit_code=self.config.no_execute_exit_code,
            account_name=self.config.account,
            limits=self.limits,
            windows=self.windows,
        )
        await self.engine.start()

    async def stop(self) -> None:
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()
        try:
            await self.engine.stop()
        except Exception:  # pragma: no cover - shutdown must finish
            log.exception("engine stop failed")
        if self._state_writer is not None:
            await self._state_writer.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.info("local Batch service stopped")

    async def reset(self) -> None:
        """Forget every object (admin ``reset``): stop the engine, clear the store, start a new engine."""
        await self.engine.stop()
        self.engine = _NotStarted()
        self.store.clear()
        self.counts.clear()
        await self._start_engine()

    # -- request bookkeeping ----------------------------------------------------------------------
    def count(self, operation: str, status: int, *, next_page: bool = False) -> None:
        entry = self.counts[operation]
        entry.total += 1
        entry.by_status[str(status)] += 1
        entry.next_pages += next_page

    def counts_json(self) -> dict[str, Any]:
        return {
            op: {"total": c.total, "byStatus": dict(c.by_status), "nextPages": c.next_pages}
            for op, c in sorted(self.counts.items())
        }

    def check_quota(self) -> None:
        """409 ``ActiveJobAndScheduleQuotaReached`` when one more job or schedule would exceed the quota."""
        if self.config.job_quota != self._job_quota_seen:  # ``config.job_quota`` set after start (embedding)
            self._job_quota_seen = self.config.job_quota
            self.limits.active_jobs_and_schedules = self.config.job_quota if self.config.job_quota > 0 else None
        self.limits.check_active(self.store)

    def info(self) -> dict[str, Any]:
        return {
            "endpoint": self.base_url,
            "account": self.config.account,
            "timeScale": self.clock.scale,
            "virtualTime": self.clock.now().isoformat(),
            "execute": self.config.execute,
            "engine": not isinstance(self.engine, _NotStarted),
            "workDir": str(self.work_dir),
            "stateFile": str(self.config.state_file) if self.config.state_file else None,
            "tls": self.config.tls,
            "certificate": str(self.cert_path) if self.cert_path else None,
            "tokenAuthority": self.base_url if self.config.tls else None,
            "pid": os.getpid(),
            "containerLabel": f"{containers.LABEL}={container_tasks.service_id(self.work_dir)}",
        }


def _active_quota(config: ServiceConfig) -> int | None:
    """``--active-jobs-and-schedules-quota``, else the old ``--job-quota`` (where 0 meant unlimited)."""
    if config.active_jobs_and_schedules_quota is not None:
        return config.active_jobs_and_schedules_quota
    return config.job_quota if config.job_quota > 0 else None


class _NotStarted:
    """The engine slot before :meth:`Service.start` (and during a reset): notifications are dropped."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def schedule_changed(self, key: str) -> None:
        return None

    def terminate_schedule(self, key: str) -> None:
        return None

    def delete_schedule(self, key: str) -> None:
        return None

    def job_created(self, key: str) -> None:
        return None

    def terminate_job(self, key: str, reason: str = "UserTerminate") -> None:
        return None

    def delete_job(self, key: str) -> None:
        return None

    def delete_pool(self, key: str) -> None:
        return None

    def counts(self, job_key: str) -> dict[str, Any]:
        zero = {"active": 0, "running": 0, "completed": 0, "succeeded": 0, "failed": 0}
        return {"taskCounts": dict(zero), "taskSlotCounts": dict(zero)}
