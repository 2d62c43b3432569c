"""The admin API under ``/_emulator/`` (outside the Batch API; never faulted).

Allowed without credentials from loopback clients; from anywhere else the request must carry
``X-Emulator-Key: <account key>`` (either key).

- ``GET  /_emulator/health``: ``{"status": "ok"}``
- ``GET  /_emulator/info``: endpoint, account, time scale, virtual time, work dir, engine, TLS
- ``GET  /_emulator/counts``: requests per operation ``{op: {"total": n, "byStatus": {"201": n}}}``;
  ``DELETE`` resets them
- ``GET  /_emulator/faults`` / ``POST`` (partial): ``{"rate", "codes", "latencyMs", "retryAfter",
  "nextN", "operations", "injected"}``
- ``GET  /_emulator/clock`` / ``POST {"scale": X}`` / ``POST {"advance": "PT1H"}`` (or
  ``"advanceSeconds"``): virtual time
- ``POST /_emulator/reset``: forget every object and count (the engine restarts)
- ``GET  /_emulator/state``: the whole store, as the state file holds it
- ``GET  /_emulator/federated-credentials`` / ``POST {"clientId", "issuer", "subject", "audience"}`` (optional
  ``"name"``, ``"audiences"`` for several, ``"jwks"`` to give the issuer's keys instead of discovering them) /
  ``DELETE`` (``?clientId=`` for one client): the federated identity credentials the token endpoint trusts,
  what ``az identity federated-credential create`` sets up in Azure (:mod:`localbatch.tokens`; needs ``--tls``)
- ``GET  /_emulator/entra`` / ``POST {"accessTokenLifetimeSeconds": n, "clientsWithoutBatchRole": [ids]}``:
  access-token lifetime, identities the Batch API refuses with 403 ``AuthorizationFailure`` (no role
  assignment), and (GET) the credentials and the sign-in log of the token endpoint
- ``GET  /_emulator/quotas`` / ``POST`` (any subset of ``dedicatedCores``, ``lowPriorityCores``,
  ``activeJobsAndSchedules``, ``dedicatedCoresPerVMFamily``; null = unlimited): the account's quotas
  (:mod:`localbatch.quotas`); pools short of their target try again after a change
- ``GET  /_emulator/allocation-failures`` / ``POST {"vmSize", "code", "message"}`` / ``DELETE``
  (``?vmSize=`` for one): pools of that VM size get that resize error and no node
- ``GET  /_emulator/windows`` / ``POST {"terminatingSeconds", "deletingSeconds"}``: Batch seconds jobs and
  schedules stay ``terminating`` / ``deleting`` (:mod:`localbatch.windows`)
- ``GET  /_emulator/keys``: ``{"primary", "secondary"}``; ``POST /_emulator/keys/regenerate
  {"keyName": "primary"|"secondary"}``: a new key replaces that one (the old one stops working)
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Any

from aiohttp import web

from batchwire import durations
from localbatch import persistence
from localbatch.context import SERVICE_KEY, ServiceContext
from localbatch.tokens import FederatedCredential, TokenIssuer


def _svc(request: web.Request) -> ServiceContext:
    return request.app[SERVICE_KEY]


def _authorize(request: web.Request) -> None:
    peer = request.remote or ""
    try:
        if ipaddress.ip_address(peer).is_loopback:
            return
    except ValueError:
        pass
    sent = request.headers.get("X-Emulator-Key", "")
    if not _svc(request).keys.matches(sent):
        raise web.HTTPForbidden(text="admin API: call from loopback or send X-Emulator-Key: <account key>\n")


async def _json(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="admin API: the body must be a JSON object\n") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="admin API: the body must be a JSON object\n")
    return data


async def health(request: web.Request) -> web.Response:
    _authorize(request)
    return web.json_response({"status": "ok"})


async def info(request: web.Request) -> web.Response:
    _authorize(request)
    return web.json_response(_svc(request).info())


async def get_counts(request: web.Request) -> web.Response:
    _authorize(request)
    return web.json_response(_svc(request).counts_json())


async def reset_counts(request: web.Request) -> web.Response:
    _authorize(request)
    _svc(request).counts.clear()
    return web.json_response({})


async def get_faults(request: web.Request) -> web.Response:
    _authorize(request)
    return web.json_response(_svc(request).faults.to_json())


async def set_faults(request: web.Request) -> web.Response:
    _authorize(request)
    svc = _svc(request)
    try:
        svc.faults.update(await _json(request))
    except (TypeError, ValueError) as exc:
        raise web.HTTPBadRequest(text=f"admin API: {exc}\n") from None
    return web.json_response(svc.faults.to_json())


def _clock_json(svc: ServiceContext) -> dict[str, Any]:
    return {"now": svc.clock.now().isoformat(), "scale": svc.clock.scale}


async def get_clock(request: web.Request) -> web.Response:
    _authorize(request)
    return web.json_response(_clock_json(_svc(request)))


async def set_clock(request: web.Request) -> web.Response:
    _authorize(request)
    svc = _svc(request)
    data = await _json(request)
    try:
        if "scale" in data:
            svc.clock.set_scale(float(data["scale"]))
        if "advance" in data:
            svc.clock.advance(durations.parse(str(data["advance"])))
        if "advanceSeconds" in data:
            svc.clock.advance(timedelta(seconds=float(data["advanceSeconds"])))
    except (TypeError, ValueError) as exc:
        raise web.HTTPBadRequest(text=f"admin API: {exc}\n") from None
    notify = getattr(svc.engine, "clock_changed", None)
    if callable(notify):
        notify()
    svc.store.mark_changed()
    return web.json_response(_clock_json(svc))


async def reset(request: web.Request) -> web.Response:
    _authorize(request)
    await _svc(request).reset()
    return web.json_response({})


async def state(request: web.Request) -> web.Response:
    _authorize(request)
    svc = _svc(request)
    return web.json_response(persistence.dump(svc.store, svc.clock))


def _tokens(request: web.Request) -> TokenIssuer:
    tokens = _svc(request).tokens
    if tokens is None:
        raise web.HTTPConflict(text="admin API: the token endpoint (Entra ID) needs the service started with --tls\n")
    return tokens


async def list_federated_credentials(request: web.Request) -> web.Response:
    _authorize(request)
    return web.json_response({"value": [c.to_json() for c in _tokens(request).federated]})


async def add_federated_credential(request: web.Request) -> web.Response:
    _authorize(request)
    tokens = _tokens(request)
    try:
        credential = FederatedCredential.from_json(await _json(request))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"admin API: {exc}\n") from None
    tokens.add_federated_credential(credential)
    return web.json_response(credential.to_json(), status=201)


async def remove_federated_credentials(request: web.Request) -> web.Response:
    _authorize(request)
    removed = _tokens(request).remove_federated_credentials(request.query.get("clientId"))
    return web.json_response({"removed": removed})


async def get_entra(request: web.Request) -> web.Response:
    _authorize(request)
    return web.json_response(_tokens(request).settings_json())


async def set_entra(request: web.Request) -> web.Response:
    _authorize(request)
    tokens = _tokens(request)
    try:
        tokens.update_settings(await _json(request))
    except (TypeError, ValueError) as exc:
        raise web.HTTPBadRequest(text=f"admin API: {exc}\n") from None
    return web.json_response(tokens.settings_json())


def _limits_changed(svc: ServiceContext) -> None:
    notify = getattr(svc.engine, "limits_changed", None)
    if callable(notify):
        notify()


async def get_quotas(request: web.Request) -> web.Response:
    _authorize(request)
    return web.json_response(_svc(request).limits.to_json())


async def set_quotas(request: web.Request) -> web.Response:
    """Set any of ``dedicatedCores``, ``lowPriorityCores``, ``activeJobsAndSchedules``,
    ``dedicatedCoresPerVMFamily`` (null clears); pools short of their target then try again."""
    _authorize(request)
    svc = _svc(request)
    try:
        svc.limits.update(await _json(request))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"admin API: {exc}\n") from None
    _limits_changed(svc)
    return web.json_response(svc.limits.to_json())


async def get_allocation_failures(request: web.Request) -> web.Response:
    _authorize(request)
    return web.json_response(_svc(request).limits.failures_json())


async def add_allocation_failure(request: web.Request) -> web.Response:
    """``{"vmSize", "code" (default AllocationFailed), "message"}``: pools of that size get no node."""
    _authorize(request)
    svc = _svc(request)
    try:
        failure = svc.limits.add_failure(await _json(request))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"admin API: {exc}\n") from None
    return web.json_response(failure, status=201)


async def clear_allocation_failures(request: web.Request) -> web.Response:
    _authorize(request)
    svc = _svc(request)
    svc.limits.clear_failures(request.query.get("vmSize"))
    _limits_changed(svc)
    return web.json_response(svc.limits.failures_json())


async def get_windows(request: web.Request) -> web.Response:
    _authorize(request)
    return web.json_response(_svc(request).windows.to_json())


async def set_windows(request: web.Request) -> web.Response:
    _authorize(request)
    svc = _svc(request)
    try:
        svc.windows.update(await _json(request))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"admin API: {exc}\n") from None
    return web.json_response(svc.windows.to_json())


async def get_keys(request: web.Request) -> web.Response:
    _authorize(request)
    return web.json_response(_svc(request).keys.to_json())


async def regenerate_key(request: web.Request) -> web.Response:
    """``{"keyName": "primary"|"secondary"}``: that key is replaced at once (the old one stops working)."""
    _authorize(request)
    svc = _svc(request)
    try:
        keys = svc.keys.regenerate(str((await _json(request)).get("keyName", "")).lower())
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"admin API: {exc}\n") from None
    return web.json_response(keys)


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/_emulator/health", health, name="admin_health")
    router.add_get("/_emulator/info", info, name="admin_info")
    router.add_get("/_emulator/counts", get_counts, name="admin_counts")
    router.add_delete("/_emulator/counts", reset_counts, name="admin_reset_counts")
    router.add_get("/_emulator/faults", get_faults, name="admin_faults")
    router.add_post("/_emulator/faults", set_faults, name="admin_set_faults")
    router.add_get("/_emulator/clock", get_clock, name="admin_clock")
    router.add_post("/_emulator/clock", set_clock, name="admin_set_clock")
    router.add_post("/_emulator/reset", reset, name="admin_reset")
    router.add_get("/_emulator/state", state, name="admin_state")
    router.add_get("/_emulator/federated-credentials", list_federated_credentials, name="admin_federated_credentials")
    router.add_post("/_emulator/federated-credentials", add_federated_credential, name="admin_add_federated_credential")
    router.add_delete("/_emulator/federated-credentials", remove_federated_credentials,
                      name="admin_remove_federated_credentials")
    router.add_get("/_emulator/entra", get_entra, name="admin_entra")
    router.add_post("/_emulator/entra", set_entra, name="admin_set_entra")
    router.add_get("/_emulator/quotas", get_quotas, name="admin_quotas")
    router.add_post("/_emulator/quotas", set_quotas, name="admin_set_quotas")
    router.add_get("/_emulator/allocation-failures", get_allocation_failures, name="admin_allocation_failures")
    router.add_post("/_emulator/allocation-failures", add_allocation_failure, name="admin_add_allocation_failure")
    router.add_delete("/_emulator/allocation-failures", clear_allocation_failures,
                      name="admin_clear_allocation_failures")
    router.add_get("/_emulator/windows", get_windows, name="admin_windows")
    router.add_post("/_emulator/windows", set_windows, name="admin_set_windows")
    router.add_get("/_emulator/keys", get_keys, name="admin_keys")
    router.add_post("/_emulator/keys/regenerate", regenerate_key, name="admin_regenerate_key")
