"""Per-resource credentials: the Secret re-read when Batch refuses a key, credential groups for the pollers, and
the expiry of the SAS an adopted schedule holds (fakes for the Kubernetes API; the real parts are in
tests/integration/test_operator_key_rotation.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from batchop.api import conditions as cond
from batchop.batch.credentials import SecretSource, endpoint_of
from batchop.batch.settings import Settings
from batchop.controller import blobs
from batchop.controller.accounts import AccountResolver, name_secret
from batchop.controller.pollers import Pollers
from batchop.controller.reconcile.view import ObjectView
from batchop.spec.sas_lifetime import held_expiry, sas_expiry

ENDPOINT = "https://acct.westeurope.batch.azure.com"


class Secrets:
    """Secrets by namespace and name, counting reads."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], tuple[dict[str, str], str]] = {}
        self.reads = 0

    async def get_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None:
        self.reads += 1
        return self.data.get((namespace, name))


def view(name: str, secret: str, namespace: str = "ns") -> ObjectView:
    spec: Any = {"account": {"endpoint": ENDPOINT, "credentialsSecretRef": {"name": secret}}}
    return ObjectView(namespace, name, f"uid-{name}", 1, spec)


async def test_a_refused_key_rereads_the_secret_at_once_but_once_a_second() -> None:
    kube = Secrets()
    kube.data[("ns", "s")] = ({"accountName": "acct", "accountKey": "b25l"}, "1")
    source = SecretSource(kube, ttl=3600, reread_interval=0.0)
    assert (await source.get("ns", "s")) is not None and kube.reads == 1
    kube.data[("ns", "s")] = ({"accountName": "acct", "accountKey": "dHdv"}, "2")
    await source.get("ns", "s")
    assert kube.reads == 1, "within the cache time"
    await source.reread("ns", "s")
    assert kube.reads == 2 and (await source.get("ns", "s")) == ({"accountName": "acct", "accountKey": "dHdv"}, "2")
    limited = SecretSource(kube, ttl=3600)  # the default: at most one re-read a second per Secret
    await limited.get("ns", "s")
    for _ in range(5):
        await limited.reread("ns", "s")
    assert kube.reads == 4, "one read at the cache's pace, then one (not five) because of refusals"


async def test_after_refusal_gives_the_new_key_only_when_the_secret_holds_another() -> None:
    kube = Secrets()
    kube.data[("ns", "s")] = ({"accountName": "acct", "accountKey": "cHJpbWFyeQ=="}, "1")
    resolver = AccountResolver(Settings(), SecretSource(kube, ttl=3600, reread_interval=0.0))
    ref = await resolver.resolve(view("r", "s"))
    assert ref.secret == ("ns", "s")
    assert await resolver.after_refusal(ref, view("r", "s")) is None, "same key: the refusal stands"
    kube.data[("ns", "s")] = ({"accountName": "acct", "accountKey": "c2Vjb25kYXJ5"}, "2")
    assert (await resolver.resolve(view("r", "s"))).key == "cHJpbWFyeQ==", "the cache still holds the old key"
    fresh = await resolver.after_refusal(ref, view("r", "s"))
    assert fresh is not None and fresh.key == "c2Vjb25kYXJ5" and fresh.credential_id != ref.credential_id
    await resolver.close()


async def test_each_resource_is_polled_in_the_group_of_its_own_key() -> None:
    kube = Secrets()
    kube.data[("ns", "good")] = ({"accountName": "acct", "accountKey": "Z29vZA=="}, "1")
    kube.data[("ns", "bad")] = ({"accountName": "acct", "accountKey": "YmFk"}, "1")
    kube.data[("ns", "copy")] = ({"accountName": "acct", "accountKey": "Z29vZA=="}, "1")
    resolver = AccountResolver(Settings(), SecretSource(kube, ttl=0))
    refs = {}
    for name, secret in (("a", "good"), ("b", "bad"), ("c", "copy")):
        refs[name] = await resolver.resolve(view(name, secret))
        resolver.gateway_for(refs[name], view(name, secret))
    good, bad = refs["a"].credential_id, refs["b"].credential_id
    assert good != bad and refs["c"].credential_id == good
    assert resolver.members_of(good) == {("ns", "a"), ("ns", "c")} and resolver.members_of(bad) == {("ns", "b")}
    assert endpoint_of(good) == ENDPOINT.lower() and "Z29vZA" not in good
    assert resolver.gateway(good) is not resolver.gateway(bad)
    # b's Secret fixed (the key of the others): b joins their group at the next refresh of its group
    kube.data[("ns", "bad")] = ({"accountName": "acct", "accountKey": "Z29vZA=="}, "2")
    moved = await resolver.refresh(bad)
    assert moved.moved == {good} and moved.movers == [("ns", "b")] and not moved.stayed
    assert resolver.members_of(good) == {
        ("ns", "a"), ("ns", "b"), ("ns", "c")}
    assert not resolver.members_of(bad) and resolver.gateway(bad) is None, "no Secret holds the bad key any more"
    # c's Secret deleted: c leaves every group, to be reconciled (which reports CredentialsNotFound)
    del kube.data[("ns", "copy")]
    result = await resolver.refresh(good)
    assert result.unresolved == [("ns", "c")] and sorted(result.stayed) == [("ns", "a"), ("ns", "b")]
    assert resolver.group_of(("ns", "c")) is None
    resolver.forget(("ns", "a"))
    assert resolver.members_of(good) == {("ns", "b")}
    await resolver.close()


async def test_a_refresh_resolves_each_distinct_account_once_and_keeps_unchanged_members() -> None:
    kube = Secrets()
    kube.data[("ns", "s")] = ({"accountName": "acct", "accountKey": "Z29vZA=="}, "1")
    kube.data[("other", "s")] = ({"accountName": "acct", "accountKey": "Z29vZA=="}, "1")
    resolver = AccountResolver(Settings(), SecretSource(kube, ttl=0))  # ttl 0: every resolution reads the Secret
    names = [("ns", f"r{i}") for i in range(5)] + [("other", "r0")]
    for namespace, name in names:
        resolver.gateway_for(await resolver.resolve(view(name, "s", namespace)), view(name, "s", namespace))
    group = resolver.group_of(("ns", "r0"))
    assert group is not None and resolver.members_of(group) == set(names), "the same key: one group"
    held = {key: resolver._members[key] for key in names}
    kube.reads = 0
    result = await resolver.refresh(group)
    assert kube.reads == 2, "one resolution per (namespace, Secret), not one per resource"
    assert sorted(result.stayed) == sorted(names)
    assert all(resolver._members[key] is held[key] for key in names), "re-resolved alike: nothing replaced"
    await resolver.close()


async def test_members_resolved_from_different_versions_of_a_secret_are_each_brought_to_the_current_one() -> None:
    kube = Secrets()
    kube.data[("ns", "s")] = ({"accountName": "acct", "accountKey": "Z29vZA=="}, "1")
    resolver = AccountResolver(Settings(), SecretSource(kube, ttl=0))
    resolver.gateway_for(await resolver.resolve(view("a", "s")), view("a", "s"))
    kube.data[("ns", "s")] = ({"accountName": "acct", "accountKey": "Z29vZA=="}, "2")  # same key, new version
    resolver.gateway_for(await resolver.resolve(view("b", "s")), view("b", "s"))
    group = resolver.group_of(("ns", "a"))
    assert group is not None and resolver.group_of(("ns", "b")) == group, "the same key: one group"
    assert resolver._members[("ns", "a")].ref != resolver._members[("ns", "b")].ref
    result = await resolver.refresh(group)
    assert sorted(result.stayed) == [("ns", "a"), ("ns", "b")] and not result.movers
    assert resolver._members[("ns", "a")].ref == resolver._members[("ns", "b")].ref, "each assigned the current"
    assert resolver._members[("ns", "a")].ref.source.endswith("@2")
    held = dict(resolver._members)
    changes = resolver.changes
    result = await resolver.refresh(group)
    assert sorted(result.stayed) == [("ns", "a"), ("ns", "b")]
    assert resolver._members == held and all(resolver._members[k] is held[k] for k in held)
    assert resolver.changes == changes, "nothing joined or left"
    # the key rotated: the whole bucket moves, though its members held one ref
    kube.data[("ns", "s")] = ({"accountName": "acct", "accountKey": "bmV3"}, "3")
    result = await resolver.refresh(group)
    assert result.movers == [("ns", "a"), ("ns", "b")] and not result.stayed and resolver.changes > changes
    assert not resolver.occupied(group) and len(result.moved) == 1
    await resolver.close()


def test_a_refusal_names_the_resources_own_secret() -> None:
    from batchop.batch.credentials import AccountRef

    ref = AccountRef(ENDPOINT, "acct", "a2V5", source="secret team-b/batch@12")
    synced = cond.make(cond.SYNCED, cond.FALSE, cond.REASON_AUTHENTICATION_FAILED,
                       "Batch refused the credentials (AuthenticationFailed): x. Check the account name and key in "
                       "the credentials Secret (or the workload identity's role assignment)")
    name_secret(synced, ref)
    assert "Secret team-b/batch (spec.account.credentialsSecretRef)" in synced["message"]
    assert "a2V5" not in synced["message"]
    other = cond.make(cond.SYNCED, cond.FALSE, cond.REASON_BATCH_UNAVAILABLE, "down")
    name_secret(other, ref)
    assert other["message"] == "down"


async def test_pollers_of_groups_without_members_stop_when_another_starts() -> None:
    occupied = {"a": True, "b": True}

    class StubPoller:
        endpoint_key = "e"

        def wake(self) -> None:
            return None

        async def run(self) -> None:
            await asyncio.Event().wait()

    pollers = Pollers(lambda group: StubPoller(), occupied=lambda group: occupied.get(group, False))  # type: ignore
    pollers.ensure("a")
    pollers.ensure("b")
    task_a = pollers.running["a"][1]
    occupied["a"] = False  # its key rotated away
    pollers.ensure("c")
    await asyncio.sleep(0)
    assert set(pollers.running) == {"b", "c"} and task_a.cancelled()
    await pollers.stop()


def _sas(expiry: datetime, key_expiry: datetime | None = None) -> str:
    query = f"sv=2025-01-05&se={expiry.strftime('%Y-%m-%dT%H:%M:%SZ')}&sr=c&sp=r&sig=abc%3D"
    if key_expiry is not None:
        query += f"&skoid=x&ske={key_expiry.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    return f"https://acct.blob.core.windows.net/input/words.txt?{query}"


def test_the_expiry_of_the_sas_a_schedule_holds_is_read_from_the_tokens() -> None:
    soon = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    later = soon + timedelta(days=3)
    job_spec = {
        "jobManagerTask": {"resourceFiles": [{"httpUrl": _sas(later)}, {"httpUrl": _sas(later, key_expiry=soon)}],
                           "outputFiles": [{"destination": {"container": {"containerUrl": _sas(later)}}}]},
        "commonEnvironmentSettings": [{"name": "X", "value": "https://example.com/?a=b"}],
    }
    assert sas_expiry(_sas(later)) == later
    assert held_expiry(job_spec) == soon, "a user-delegation SAS stops with its key"
    assert held_expiry({"jobManagerTask": {"commandLine": "echo sig=1"}}) is None


def test_an_adopted_schedule_keeps_the_expiry_of_the_sas_it_holds() -> None:
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
    observed = {"jobSpecification": {"jobManagerTask": {"resourceFiles": [{"httpUrl": _sas(soon)}]}}}
    status: dict[str, Any] = {"sas": {"expiresAt": "2027-01-01T00:00:00Z"}}  # what this pass minted, not written
    blobs.kept_sas({}, status, ["adopt"], observed)  # type: ignore[arg-type]
    assert status["sas"] == {"expiresAt": soon.strftime("%Y-%m-%dT%H:%M:%SZ")}
    schedule = {"executionInfo": {"nextRunTime": (soon + timedelta(hours=1)).isoformat()},
                "jobSpecification": observed["jobSpecification"]}
    assert blobs.renewal_due(status, schedule), "the poller renews them like any other"
    bare: dict[str, Any] = {"sas": {"expiresAt": "2027-01-01T00:00:00Z"}}
    blobs.kept_sas({}, bare, ["adopt"], {"jobSpecification": {"jobManagerTask": {"resourceFiles": [
        {"httpUrl": "https://acct.blob.core.windows.net/input/words.txt"}]}}})  # type: ignore[arg-type]
    assert blobs.renewal_due(bare, schedule), "holding no SAS where one is needed: renewed at once"
