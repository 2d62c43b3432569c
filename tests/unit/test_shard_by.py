"""``--shard-by account``: every resource of one Batch account lands in one shard, whatever the spelling of
its endpoint; resources without an endpoint count as the operator's default account."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from batchop.api.names import LABEL_SHARD
from batchop.cli import main as cli
from batchop.cli.commands import run as run_command
from batchop.controller.sharding import Labeler
from batchop.spec.shardkey import ShardPlan, account_key, shard_key, shard_of, shard_of_key
from batchwire import exitcodes
from batchwire.exitcodes import CLIError

DEFAULT = "https://main.westeurope.batch.azure.com"


def item(name: str, endpoint: str | None = None, namespace: str = "team") -> dict[str, Any]:
    spec: dict[str, Any] = {"account": {"endpoint": endpoint}} if endpoint else {}
    return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": "7"}, "spec": spec}


def test_account_key_is_the_endpoint_host_whatever_its_spelling() -> None:
    assert account_key("https://Acct.WestEurope.batch.azure.com/") == "acct.westeurope.batch.azure.com"
    assert account_key("acct.westeurope.batch.azure.com") == "acct.westeurope.batch.azure.com"
    assert account_key("http://127.0.0.1:8443") == "127.0.0.1:8443"
    assert account_key(None) == account_key("") == ""


def test_by_account_one_shard_per_account_and_the_default_account_is_its_endpoint() -> None:
    shards = 8
    of = [shard_of_key(shard_key(item(f"s{i}", "https://b.region.batch.azure.com/"), "account"), shards)
          for i in range(50)]
    assert len(set(of)) == 1
    implicit = shard_key(item("x"), "account", DEFAULT)
    explicit = shard_key(item("y", DEFAULT.upper() + "/"), "account", DEFAULT)
    assert implicit == explicit == "main.westeurope.batch.azure.com"
    accounts = {shard_of_key(account_key(f"https://a{i}.region.batch.azure.com"), shards) for i in range(50)}
    assert len(accounts) == shards  # 50 accounts cover every shard


def test_by_resource_is_the_name_hash_of_before() -> None:
    assert shard_of_key(shard_key(item("nightly", DEFAULT), "resource"), 4) == shard_of("team", "nightly", 4)


class Kube:
    """Answers the labeller's list with ``items`` and records its patches."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.patches: dict[str, str] = {}

    async def request(self, method: str, path: str, *, json: Any = None,
                      content_type: str | None = None) -> dict[str, Any] | None:
        if method == "GET":
            return {"items": self.items}
        assert json["metadata"]["resourceVersion"] == "7"  # guarded by the version listed
        self.patches[path.rsplit("/", 1)[1]] = json["metadata"]["labels"][LABEL_SHARD]
        return {}


def test_the_labeller_writes_the_account_shard() -> None:
    items = [item(f"s{i}", f"https://acct{i % 3}.region.batch.azure.com") for i in range(30)] + [item("d")]
    kube = Kube(items)
    plan = ShardPlan(4, "account", DEFAULT)
    labeler = Labeler(kube, plan)
    assert asyncio.run(labeler.round()) == 31
    for i in range(30):
        want = shard_of_key(f"acct{i % 3}.region.batch.azure.com", 4)
        assert kube.patches[f"s{i}"] == str(want)
    assert kube.patches["d"] == str(shard_of_key("main.westeurope.batch.azure.com", 4))
    # the admission webhook writes the same label in the create
    assert {name: plan.label_at_create(i) for name, i in zip(kube.patches, items, strict=True)} == {
        name: {LABEL_SHARD: shard} for name, shard in kube.patches.items()}


def election_of(argv: list[str]) -> Any:
    return run_command._election_config(cli.build_parser().parse_args(["run", *argv]))


def test_shard_by_account_needs_shards() -> None:
    with pytest.raises(CLIError) as error:
        election_of(["--leader-elect", "--shard-by", "account"])
    assert error.value.code == exitcodes.USAGE and "--shards" in str(error.value)
    assert election_of(["--leader-elect", "--shards", "4", "--shard-by", "account"]) is not None
