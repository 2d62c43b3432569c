"""Leader election and shards with several ``batchop run --leader-elect`` processes on the real API server.

- two replicas: exactly one holds the Lease and reconciles; SIGKILL of the leader -> the standby takes the
  Lease (``leaseTransitions`` grows) and applies an edit made after the kill;
- SIGTERM of the leader -> it releases the Lease (``ReleaseOnCancel``: holder empty) and the standby applies
  the next edit; the webhook answers on the standby too;
- ``--shards 2``: one replica holds both shard Leases; a second one joins and receives one; each resource
  carries its shard label and is reconciled by the holder of that shard only; the joiner leaves (SIGKILL)
  and its shard returns to the survivor;
- ``--shards 4 --shard-by account``: resources of two Batch accounts (the operator's default one, and one named in
  ``spec.account`` with its Secret) carry their account's shard label, and each account is listed by one
  replica only; with the mutating webhook registered, a new resource carries its shard label (and the
  finalizer) in the object its own create returns;
- fencing: a leader paused (SIGSTOP) past its Lease, then resumed while the new leader is paused too, sends
  no Batch write (the local Batch service's request counts do not move) until the new leader resumes.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import ssl
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from batchop.api.names import FINALIZER, LABEL_SHARD
from batchop.spec.shardkey import account_key, shard_of_key
from tests.chaos.conftest import Kube, batch_env, command_line, owned_schedules, spec
from tests.fixtures.operator import OperatorProcess, resource_namespace, wait_for

pytestmark = [pytest.mark.timeout(600)]
RESYNC = 2.0


@pytest.fixture(scope="module")
def client(kube: Any) -> Kube:
    return Kube(kube)


@pytest.fixture(scope="module")
def own_batch(local_batch_factory: Any) -> Any:
    """A Batch service of this module only (no task execution): its request counts are ours alone."""
    return local_batch_factory("--no-execute")


@pytest.fixture(scope="module")
def second_batch(local_batch_factory: Any) -> Any:
    """A second Batch account (its own service, endpoint and key)."""
    return local_batch_factory("--no-execute")


@pytest.fixture()
def namespace(kube: Any) -> Iterator[str]:
    with resource_namespace(kube, "le", timeout=120) as ns:
        yield ns


def replica(operator_factory: Any, batch: Any, ns: str, lease: str, *extra: str) -> OperatorProcess:
    args = ["--leader-elect", "--leader-election-namespace", ns, "--leader-election-id", lease, *extra]
    op: OperatorProcess = operator_factory([ns], resync=RESYNC, args=args, env=batch_env(batch))
    return op


def identity(op: OperatorProcess) -> str:
    found = wait_for(lambda: re.search(r"identity (\S+),", op.logs()), 30, message="the replica's identity")
    return str(found.group(1))


def health(op: OperatorProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.port}/healthz", timeout=5) as response:
        return dict(json.loads(response.read()))


def lease(kube: Any, ns: str, name: str) -> dict[str, Any]:
    result = kube.kubectl("get", "lease", name, "-n", ns, "-o", "json")
    return dict(json.loads(result.stdout)["spec"]) if result.returncode == 0 else {}


def holder(kube: Any, ns: str, name: str) -> str:
    return str(lease(kube, ns, name).get("holderIdentity") or "")


def schedule_command(batch: Any, ns: str, name: str) -> str | None:
    mine = owned_schedules(batch, ns).get(name) or []
    if len(mine) != 1:
        return None
    return str(((mine[0].get("jobSpecification") or {}).get("jobManagerTask") or {}).get("commandLine"))


def applied(batch: Any, ns: str, name: str, tag: str) -> bool:
    return schedule_command(batch, ns, name) == command_line(tag)


def test_one_leader_and_failover_after_sigkill(
    kube: Any, client: Kube, own_batch: Any, operator_factory: Any, namespace: str
) -> None:
    ns, name = namespace, f"le-{uuid.uuid4().hex[:6]}"
    first = replica(operator_factory, own_batch, ns, name)
    second = replica(operator_factory, own_batch, ns, name)
    ids = {identity(first): first, identity(second): second}
    leader_id = wait_for(lambda: holder(kube, ns, name) in ids and holder(kube, ns, name), 40, message="a leader")
    leader, standby = ids[leader_id], next(op for i, op in ids.items() if i != leader_id)
    client.create(ns, "sched", spec("v1"))
    wait_for(lambda: applied(own_batch, ns, "sched", "v1"), 60, message="the leader to create the schedule")
    assert "Reconciling as the leader" in leader.logs()
    assert "Reconciling" not in standby.logs() and f"{ns}/sched" not in standby.logs()
    # the liveness endpoint (the admission thread's) shows the controller's watch on the leader only
    # (kopf keeps a probe's answer for 10 s: the first ones may predate the election)
    watch = wait_for(lambda: (w := health(leader).get("watch")) and w.get("listed") and w, 30,
                     message="the leader's watch on its liveness endpoint")
    assert watch["reconciling"] == [0] and watch["failing"] == {}, watch
    assert health(standby)["watch"] == {"reconciling": []}
    transitions = int(lease(kube, ns, name).get("leaseTransitions") or 0)

    leader.kill()
    client.set_command(ns, "sched", "v2")
    wait_for(lambda: applied(own_batch, ns, "sched", "v2"), 90, message="the standby to apply the edit")
    taken = lease(kube, ns, name)
    assert taken["holderIdentity"] != leader_id and taken["holderIdentity"] in ids
    assert int(taken.get("leaseTransitions") or 0) == transitions + 1
    assert len(owned_schedules(own_batch, ns).get("sched") or []) == 1


def _webhook_answers(port: int) -> bool:
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "1", "operation": "CREATE", "object": {"spec": {}},
                          "userInfo": {"username": "system:admin"},
                          "kind": {"group": "azurebatch.dev", "version": "v1alpha1", "kind": "BatchJobSchedule"},
                          "resource": {"group": "azurebatch.dev", "version": "v1alpha1",
                                       "resource": "batchschedules"}}}
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    request = urllib.request.Request(f"https://127.0.0.1:{port}/validate", data=json.dumps(review).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=context, timeout=5) as response:
        answer = json.loads(response.read())
    return answer["response"]["allowed"] is False  # an empty spec is refused: the webhook judged it


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_sigterm_releases_the_lease_and_standby_serves_the_webhook(
    kube: Any, client: Kube, own_batch: Any, operator_factory: Any, namespace: str
) -> None:
    ns, name = namespace, f"le-{uuid.uuid4().hex[:6]}"
    ports = [_free_port(), _free_port()]
    config = f"batchop-le-{uuid.uuid4().hex[:6]}.azurebatch.dev"
    webhook = ["--webhook-configuration", config]
    first = replica(operator_factory, own_batch, ns, name, "--webhook-port", str(ports[0]), *webhook)
    second = replica(operator_factory, own_batch, ns, name, "--webhook-port", str(ports[1]), *webhook)
    ids = {identity(first): (first, ports[0]), identity(second): (second, ports[1])}
    leader_id = wait_for(lambda: holder(kube, ns, name) in ids and holder(kube, ns, name), 40, message="a leader")
    (leader, _), (standby, standby_port) = ids[leader_id], next(v for i, v in ids.items() if i != leader_id)
    assert wait_for(lambda: _webhook_answers(standby_port), 30, message="the standby's webhook")
    client.create(ns, "sched", spec("v1"))
    wait_for(lambda: applied(own_batch, ns, "sched", "v1"), 60, message="the leader to create the schedule")

    leader.stop()
    assert "Released the Lease" in leader.logs()
    client.set_command(ns, "sched", "v2")
    wait_for(lambda: applied(own_batch, ns, "sched", "v2"), 60, message="the standby to apply the edit")
    assert holder(kube, ns, name) != leader_id
    assert "Reconciling as the leader" in standby.logs()
    kube.kubectl("delete", "validatingwebhookconfiguration", config)
    kube.kubectl("delete", "mutatingwebhookconfiguration", config, "--ignore-not-found")


def test_shards_handed_over_when_a_replica_joins_and_leaves(
    kube: Any, client: Kube, own_batch: Any, operator_factory: Any, namespace: str
) -> None:
    ns, name = namespace, f"le-{uuid.uuid4().hex[:6]}"
    shard_leases = [f"{name}-shard-0", f"{name}-shard-1"]
    first = replica(operator_factory, own_batch, ns, name, "--shards", "2")
    first_id = identity(first)
    names = [f"s{i}" for i in range(6)]
    for item in names:
        client.create(ns, item, spec("v1"))
    wait_for(lambda: all(applied(own_batch, ns, n, "v1") for n in names), 90, message="one replica, two shards")
    assert {holder(kube, ns, lease_) for lease_ in shard_leases} == {first_id}

    second = replica(operator_factory, own_batch, ns, name, "--shards", "2")
    second_id = identity(second)
    wait_for(lambda: {holder(kube, ns, lease_) for lease_ in shard_leases} == {first_id, second_id}, 60,
             message="one shard handed to the joiner")
    labels = {n: (client.get(ns, n) or {})["metadata"]["labels"][LABEL_SHARD] for n in names}
    since = {first_id: len(first.logs()), second_id: len(second.logs())}  # from here on each holds its own shard
    for item in names:
        client.set_command(ns, item, "v2")
    wait_for(lambda: all(applied(own_batch, ns, n, "v2") for n in names), 90, message="both replicas apply")
    by_shard = {lease_.rsplit("-", 1)[1]: holder(kube, ns, lease_) for lease_ in shard_leases}
    logs = {first_id: first.logs()[since[first_id]:], second_id: second.logs()[since[second_id]:]}
    for item, shard in labels.items():  # the runtime names each reconcile due: only the shard's holder saw v2
        other = next(i for i in logs if i != by_shard[shard])
        ref = f"{ns}/{item}: reconcile due"
        assert ref in logs[by_shard[shard]] and ref not in logs[other], (item, shard)

    second.kill()
    wait_for(lambda: {holder(kube, ns, lease_) for lease_ in shard_leases} == {first_id}, 90,
             message="the survivor to take the dead replica's shard")
    for item in names:
        client.set_command(ns, item, "v3")
    wait_for(lambda: all(applied(own_batch, ns, n, "v3") for n in names), 90, message="the survivor applies all")


def test_a_replica_that_lost_its_lease_writes_nothing_to_batch(
    kube: Any, client: Kube, own_batch: Any, operator_factory: Any, namespace: str
) -> None:
    ns, name = namespace, f"le-{uuid.uuid4().hex[:6]}"
    timing = ["--leader-election-lease-duration", "6", "--leader-election-renew-deadline", "4",
              "--leader-election-retry-period", "1"]
    first = replica(operator_factory, own_batch, ns, name, *timing)
    second = replica(operator_factory, own_batch, ns, name, *timing)
    ids = {identity(first): first, identity(second): second}
    leader_id = wait_for(lambda: holder(kube, ns, name) in ids and holder(kube, ns, name), 40, message="a leader")
    old, new = ids[leader_id], next(op for i, op in ids.items() if i != leader_id)
    client.create(ns, "sched", spec("v1"))
    wait_for(lambda: applied(own_batch, ns, "sched", "v1"), 60, message="the leader to create the schedule")

    assert old.process is not None and new.process is not None
    old.process.send_signal(signal.SIGSTOP)  # paused: cannot renew
    try:
        wait_for(lambda: holder(kube, ns, name) not in ("", leader_id), 60, message="the standby to take the Lease")
        client.set_command(ns, "sched", "v2")
        wait_for(lambda: applied(own_batch, ns, "sched", "v2"), 60, message="the new leader to apply v2")
        new.process.send_signal(signal.SIGSTOP)  # the new leader paused too: only the old one runs
        writes = _writes(own_batch)
        client.set_command(ns, "sched", "v3")  # the old leader's kopf receives this edit when it wakes
        old.process.send_signal(signal.SIGCONT)
        wait_for(lambda: "Stopping the controller" in old.logs() or "Batch write not sent" in old.logs(), 30,
                 message="the old leader to notice its lost Lease")
        assert _writes(own_batch) == writes, "a replica without a valid Lease wrote to Batch"
        assert applied(own_batch, ns, "sched", "v2")
    finally:
        new.process.send_signal(signal.SIGCONT)
        old.process.send_signal(signal.SIGCONT)
    wait_for(lambda: applied(own_batch, ns, "sched", "v3"), 60, message="the Lease holder to apply v3")


def _writes(batch: Any) -> int:
    """Batch write requests the local service has answered so far (every operation but gets and lists)."""
    return sum(int(entry["total"]) for op, entry in batch.counts().items() if not op.startswith(("get_", "list_")))


def _listings(batch: Any) -> int:
    return int(batch.counts().get("list_job_schedules", {"total": 0})["total"])


def test_shard_by_account_keeps_each_account_in_one_shard_listed_by_one_replica(
    kube: Any, client: Kube, own_batch: Any, second_batch: Any, operator_factory: Any, namespace: str
) -> None:
    ns, name, shards = namespace, f"le-{uuid.uuid4().hex[:6]}", 4
    leases = [f"{name}-shard-{k}" for k in range(shards)]
    first = replica(operator_factory, own_batch, ns, name, "--shards", str(shards), "--shard-by", "account")
    second = replica(operator_factory, own_batch, ns, name, "--shards", str(shards), "--shard-by", "account")
    ids = {identity(first), identity(second)}
    wait_for(lambda: {holder(kube, ns, lease_) for lease_ in leases} == ids, 90,
             message="the shards spread over both replicas")

    secret = {"accountName": second_batch.account, "accountKey": second_batch.key}
    client.core().create_namespaced_secret(ns, {"metadata": {"name": "acct-b"}, "data": {
        k: base64.b64encode(v.encode()).decode() for k, v in secret.items()}})
    own = [f"a{i}" for i in range(4)]  # the operator's default account, no spec.account
    other = [f"b{i}" for i in range(4)]
    for item in own:
        client.create(ns, item, spec("v1"))
    for item in other:
        client.create(ns, item, {**spec("v1"), "account": {"endpoint": second_batch.endpoint + "/",
                                                           "credentialsSecretRef": {"name": "acct-b"}}})
    wait_for(lambda: all(applied(own_batch, ns, n, "v1") for n in own)
             and all(applied(second_batch, ns, n, "v1") for n in other), 90, message="both accounts' schedules")

    for items, batch in ((own, own_batch), (other, second_batch)):
        want = str(shard_of_key(account_key(batch.endpoint), shards))
        assert {(client.get(ns, n) or {})["metadata"]["labels"][LABEL_SHARD] for n in items} == {want}
    # one poller per account: six schedule listings take five whole intervals (two pollers: half that)
    for batch in (own_batch, second_batch):
        start, seen = time.monotonic(), _listings(batch)
        wait_for(lambda batch=batch, seen=seen: _listings(batch) >= seen + 6, 60, 0.05,
                 message="six listings of the account")
        assert time.monotonic() - start >= 0.75 * 5 * RESYNC, "an account listed by both replicas"


def test_sharded_the_webhook_labels_a_new_resource_in_its_own_create(
    kube: Any, client: Kube, own_batch: Any, operator_factory: Any, namespace: str
) -> None:
    """With the mutating webhook registered, the shard label (and the finalizer) are in the object the client's
    create returns: no labeller write, and the owner's label-selected watch receives it at once."""
    ns, name, shards = namespace, f"le-{uuid.uuid4().hex[:6]}", 4
    config = f"batchop-le-{uuid.uuid4().hex[:6]}.azurebatch.dev"
    replica(operator_factory, own_batch, ns, name, "--shards", str(shards), "--shard-by", "account",
            "--webhook-port", str(_free_port()), "--webhook-configuration", config)
    want = str(shard_of_key(account_key(own_batch.endpoint), shards))

    def created(item: str, *flags: str) -> dict[str, Any]:
        body = {"apiVersion": "azurebatch.dev/v1alpha1", "kind": "BatchJobSchedule",
                "metadata": {"name": item, "namespace": ns}, "spec": spec("v1")}
        result = kube.kubectl("create", "-f", "-", "-o", "json", *flags, input=json.dumps(body))
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout)["metadata"])

    try:  # the API server takes the new configuration a little after the operator registers it
        wait_for(lambda: (created("probe", "--dry-run=server").get("labels") or {}).get(LABEL_SHARD) == want,
                 60, 0.5, message="the mutating webhook in effect")
        meta = created("sched")
        assert meta["labels"][LABEL_SHARD] == want
        assert FINALIZER in meta["finalizers"]
        wait_for(lambda: applied(own_batch, ns, "sched", "v1"), 60, message="its owner to create the schedule")
    finally:
        kube.kubectl("delete", "validatingwebhookconfiguration", config, "--ignore-not-found")
        kube.kubectl("delete", "mutatingwebhookconfiguration", config, "--ignore-not-found")
