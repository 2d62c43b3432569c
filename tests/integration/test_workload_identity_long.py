"""Workload identity over a long run (about 12 minutes): the projected ServiceAccount token itself expires and is
replaced as kubelet replaces it, and the operator keeps working without a restart.

Why this long: the TokenRequest API issues tokens for at least 10 minutes, and azure-identity's
``WorkloadIdentityCredential`` reads the token file again at most every 10 minutes (it caches the assertion). So
the earliest moment the first ServiceAccount token has expired and the operator must present the one kubelet put
in its place is about 10 minutes after start. Access tokens live 60 s here, so the operator exchanges its
assertion every 30 to 60 seconds throughout (azure-identity refreshes early).

Skipped unless ``BATCHOP_LONG_TESTS=1``; the short runs of the same path (access-token expiry, the token file
replaced every 10 s) are in ``test_workload_identity.py``.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime
from typing import Any

import pytest

from tests.fixtures.operator import resource_namespace, wait_for
from tests.integration.test_operator import apply, condition, get, resource, wait_condition
from tests.integration.test_workload_identity import (  # noqa: F401  (stack is the module's fixture)
    SERVICE_ACCOUNT,
    IdentityStack,
    ProjectedToken,
    stack,
)

pytestmark = pytest.mark.skipif(not os.environ.get("BATCHOP_LONG_TESTS"),
                                reason="about 12 minutes: set BATCHOP_LONG_TESTS=1")

KUBELET_REFRESH = 0.8
"""kubelet replaces a projected token when 80% of its lifetime has passed."""


@pytest.mark.timeout(1500)
def test_workload_identity_long_run_survives_service_account_token_expiry(
    stack: IdentityStack, kube: Any, operator_factory: Any  # noqa: F811
) -> None:
    sa_namespace = f"wi-sa-{uuid.uuid4().hex[:6]}"
    client_id = stack.service_account(sa_namespace, str(uuid.uuid4()))
    stack.federate(client_id, f"system:serviceaccount:{sa_namespace}:{SERVICE_ACCOUNT}")
    stack.entra(accessTokenLifetimeSeconds=60)
    token = ProjectedToken(kube, stack.work / f"token-{sa_namespace}", sa_namespace, duration="10m")
    token.start(every=600 * KUBELET_REFRESH)
    first = token.written[0]
    operator = operator_factory(["wilong-*"], default_account=False, env=stack.operator_env(client_id, token.path))
    flips: list[str] = []
    try:
        with resource_namespace(kube, "wilong") as ns:
            apply(kube, ns, resource("steady"))
            wait_condition(kube, ns, "steady", "Synced", "True", timeout=60)

            def replaced_after_expiry() -> bool:
                synced = condition(get(kube, ns, "steady"), "Synced")
                if synced.get("status") != "True":
                    flips.append(f"{synced.get('reason')}: {synced.get('message')}")
                late = [s for s in _sign_ins(stack, client_id) if s["at"] > first["exp"]]
                return any(s["status"] == 200 and s["assertionIssuedAt"] > first["iat"] for s in late)

            wait_for(replaced_after_expiry, first["exp"] - time.time() + 300, interval=5,
                     message="a token exchange with the replacement ServiceAccount token after the first expired")
            apply(kube, ns, resource("after-expiry"))
            wait_condition(kube, ns, "after-expiry", "Synced", "True", timeout=90)
    finally:
        token.stop()
        operator.stop()
    assert not token.errors, token.errors
    assert not flips, flips
    sign_ins = _sign_ins(stack, client_id)
    assert all(s["status"] == 200 for s in sign_ins), [s for s in sign_ins if s["status"] != 200]
    assert len({s["assertionIssuedAt"] for s in sign_ins}) >= 2, sign_ins  # the file was read again
    assert all(s["assertionExpiresAt"] > s["at"] - 300 for s in sign_ins)  # never an assertion long expired


def _sign_ins(identity: IdentityStack, client_id: str) -> list[dict[str, Any]]:
    return [{**s, "at": datetime.fromisoformat(s["time"]).timestamp()} for s in identity.sign_ins(client_id)]
