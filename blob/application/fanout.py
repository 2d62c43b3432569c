#!/usr/bin/env python3
"""Fan-out word count on Azure Batch: the job manager, map and reduce steps of examples/schedule-fanout.yaml.

    fanout.py manager   list the input container, add one map task per input blob and one reduce task that
                        depends on all of them (the job manager task)
    fanout.py map       count the words of the file(s) under ./input into ./counts.tsv; exit 3 (BAD_INPUT)
                        when an input is not UTF-8 text
    fanout.py reduce    merge the counts of every map task that succeeded into results/$AZ_BATCH_JOB_ID/
                        counts.tsv, and list the skipped inputs in results/$AZ_BATCH_JOB_ID/summary.json

Python 3 standard library only (plus wordcount.py beside it); it uses the azure-batch SDK instead when the
node's Python has ``azure-batch`` and ``azure-identity``. The tasks call the Batch API with a Microsoft Entra
token of the node's managed identity, from the node's Instance Metadata Service (IMDS): API 2025-06-01 has no
task authentication token any more. ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` overrides the IMDS address (the
local Batch service sets it); ``FANOUT_IDENTITY_CLIENT_ID`` picks one of several user-assigned identities.

This script and wordcount.py reach each node through the job's preparation task, whose resource files are blob
references batchop resolves into read SAS URLs: every step runs them from ``$AZ_BATCH_JOB_PREP_WORKING_DIR``.
The job manager reads its own task from the Batch API to learn the SAS URLs batchop minted for it: the input
container (a read+list SAS, from its ``resourceFiles``) and the output container (a create+write SAS, from its
``outputFiles``), and hands them on to the tasks it adds.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path
from typing import Any

API_VERSION = "2025-06-01"
BATCH_RESOURCE = "https://batch.core.windows.net/"
BAD_INPUT = 3
"""Exit code of a map task whose input is not text: the job skips it (its exit conditions say so)."""
MAP_PREFIX = "map-"
REDUCE_ID = "reduce"
INPUT_FILE_PATH = "input"
"""The ``filePath`` of the job manager's resource file that names the input container."""
MAX_TASKS_PER_CALL = 100


def log(message: str) -> None:
    print(f"fanout: {message}", file=sys.stderr, flush=True)


# -- the Batch API ---------------------------------------------------------------------------------


class RestBatch:
    """The few Batch operations the steps need, over HTTPS (or the local service's HTTP) with a bearer token."""

    kind = "rest"

    def __init__(self) -> None:
        self.url = os.environ["AZ_BATCH_ACCOUNT_URL"].rstrip("/")
        self._token = ""
        self._expires = 0.0

    def token(self) -> str:
        if time.time() < self._expires - 300:
            return self._token
        host = os.environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://169.254.169.254").rstrip("/")
        query = {"api-version": "2018-02-01", "resource": BATCH_RESOURCE}
        if os.environ.get("FANOUT_IDENTITY_CLIENT_ID"):
            query["client_id"] = os.environ["FANOUT_IDENTITY_CLIENT_ID"]
        request = urllib.request.Request(f"{host}/metadata/identity/oauth2/token?{urllib.parse.urlencode(query)}",
                                         headers={"Metadata": "true"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
        self._token = answer["access_token"]
        self._expires = float(answer.get("expires_on") or time.time() + 3600)
        return self._token

    def call(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> bytes:
        params = {"api-version": API_VERSION, **(query or {})}
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}" if not path.startswith("http") else path
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(5):
            request = urllib.request.Request(url, data=data, method=method, headers={
                "Authorization": f"Bearer {self.token()}", "Content-Type": "application/json; odata=minimalmetadata"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return bytes(response.read())
            except urllib.error.HTTPError as exc:
                if exc.code in (429, 500, 503) and attempt < 4:
                    time.sleep(2 ** attempt)
                    continue
                raise SystemExit(f"fanout: {method} {path} failed: {exc.code} {exc.read()[:500]!r}") from None
        raise AssertionError("unreachable")

    def get_task(self, job_id: str, task_id: str) -> dict[str, Any]:
        return dict(json.loads(self.call("GET", f"/jobs/{_q(job_id)}/tasks/{_q(task_id)}")))

    def add_tasks(self, job_id: str, tasks: list[dict[str, Any]]) -> None:
        for start in range(0, len(tasks), MAX_TASKS_PER_CALL):
            chunk = tasks[start:start + MAX_TASKS_PER_CALL]
            answer = json.loads(self.call("POST", f"/jobs/{_q(job_id)}/addtaskcollection", {"value": chunk}))
            for result in answer.get("value", []):
                code = (result.get("error") or {}).get("code")
                if result.get("status") != "success" and code != "TaskExists":  # TaskExists: a rerun of the manager
                    raise SystemExit(f"fanout: adding task {result.get('taskId')} failed: {code}")

    def list_tasks(self, job_id: str, filter_: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        page = json.loads(self.call("GET", f"/jobs/{_q(job_id)}/tasks", query={"$filter": filter_}))
        while True:
            found.extend(page.get("value", []))
            if not page.get("odata.nextLink"):
                return found
            page = json.loads(self.call("GET", page["odata.nextLink"]))

    def read_task_file(self, job_id: str, task_id: str, path: str) -> bytes:
        return self.call("GET", f"/jobs/{_q(job_id)}/tasks/{_q(task_id)}/files/{urllib.parse.quote(path)}")


class SdkBatch(RestBatch):
    """The same operations through the azure-batch SDK and azure-identity's ManagedIdentityCredential."""

    kind = "sdk"

    def __init__(self) -> None:
        super().__init__()
        from azure.batch import BatchClient
        from azure.identity import ManagedIdentityCredential

        credential = ManagedIdentityCredential(client_id=os.environ.get("FANOUT_IDENTITY_CLIENT_ID") or None)
        self.client = BatchClient(self.url, credential)
        # azure-core sends bearer tokens over HTTPS only; the local Batch service speaks plain HTTP.
        self.options = {"enforce_https": False} if self.url.startswith("http:") else {}

    def get_task(self, job_id: str, task_id: str) -> dict[str, Any]:
        return dict(self.client.get_task(job_id, task_id, **self.options).as_dict())

    def add_tasks(self, job_id: str, tasks: list[dict[str, Any]]) -> None:
        result = self.client.create_tasks(job_id, tasks, **self.options)  # chunks of 100, retries server errors
        for item in result.result_values or []:
            code = item.error.code if item.error is not None else None
            if str(getattr(item.status, "value", item.status)) != "success" and code != "TaskExists":
                raise SystemExit(f"fanout: adding task {item.task_id} failed: {code}")

    def list_tasks(self, job_id: str, filter_: str) -> list[dict[str, Any]]:
        return [dict(t.as_dict()) for t in self.client.list_tasks(job_id, filter=filter_, **self.options)]

    def read_task_file(self, job_id: str, task_id: str, path: str) -> bytes:
        return b"".join(self.client.download_task_file(job_id, task_id, path, **self.options))


def batch() -> RestBatch:
    try:
        import azure.batch
        import azure.identity  # noqa: F401  (both probed: the SDK path needs each)
    except ImportError:
        log("using the Batch REST API (no azure-batch SDK on this node)")
        return RestBatch()
    log("using the azure-batch SDK")
    return SdkBatch()


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


# -- the job manager -------------------------------------------------------------------------------


def list_blobs(container_url: str) -> list[str]:
    """Every blob name of a container, with its SAS URL (List Blobs: ``restype=container&comp=list``)."""
    names: list[str] = []
    marker = ""
    while True:
        page = f"&marker={urllib.parse.quote(marker)}" if marker else ""
        url = f"{container_url}&restype=container&comp=list{page}"
        request = urllib.request.Request(url, headers={"x-ms-version": "2021-08-06"})
        with urllib.request.urlopen(request, timeout=60) as response:
            root = ElementTree.fromstring(response.read())
        names.extend(n.text or "" for n in root.iter("Name") if n.text and not n.text.endswith("/"))
        marker = (root.findtext("NextMarker") or "").strip()
        if not marker:
            return names


def blob_url(container_url: str, name: str) -> str:
    base, _, sas = container_url.partition("?")
    return f"{base}/{urllib.parse.quote(name)}?{sas}"


def step_command(step: str) -> str:
    """The command line of a step, run from the scripts the job preparation task staged on the node, with the
    node's ``python3`` (or ``$FANOUT_PYTHON``, e.g. set in the job's ``commonEnvironmentSettings``)."""
    return f"/bin/bash -c 'exec \"${{FANOUT_PYTHON:-python3}}\" \"$AZ_BATCH_JOB_PREP_WORKING_DIR/fanout.py\" {step}'"


def manager() -> int:
    job_id, my_id = os.environ["AZ_BATCH_JOB_ID"], os.environ["AZ_BATCH_TASK_ID"]
    api = batch()
    me = api.get_task(job_id, my_id)
    inputs = [rf for rf in me.get("resourceFiles") or [] if rf.get("storageContainerUrl")
              and rf.get("filePath") == INPUT_FILE_PATH]
    if not inputs or not me.get("outputFiles"):
        log(f"the job manager needs a resource file with filePath {INPUT_FILE_PATH!r} naming the input container, "
            "and an output file naming the output container")
        return 2
    input_url = inputs[0]["storageContainerUrl"]
    names = list_blobs(input_url)
    log(f"{len(names)} input blob(s)")
    maps = [map_task(i, name, input_url) for i, name in enumerate(sorted(names), start=1)]
    reduce = {
        "id": REDUCE_ID, "displayName": "merge the counts", "commandLine": step_command("reduce"),
        "dependsOn": {"taskIds": [t["id"] for t in maps]},
        "outputFiles": me["outputFiles"],  # the job manager's own destination (a create+write SAS)
        "constraints": {"maxTaskRetryCount": 1},
    }
    api.add_tasks(job_id, [*maps, reduce])
    results = Path("results") / job_id
    results.mkdir(parents=True, exist_ok=True)
    (results / "manifest.json").write_text(json.dumps(
        {"inputs": sorted(names), "mapTasks": [t["id"] for t in maps], "reduceTask": REDUCE_ID, "api": api.kind},
        indent=2) + "\n")
    log(f"added {len(maps)} map task(s) and the reduce task")
    return 0


def map_task(index: int, name: str, input_url: str) -> dict[str, Any]:
    return {
        "id": f"{MAP_PREFIX}{index:05d}",
        "displayName": name[:1024],
        "commandLine": step_command("map"),
        "resourceFiles": [{"httpUrl": blob_url(input_url, name), "filePath": f"{INPUT_FILE_PATH}/{name}"}],
        "exitConditions": {
            # bad input: skip it (the job goes on, the reduce still runs); any other failure ends the job
            "exitCodes": [{"code": BAD_INPUT, "exitOptions": {"jobAction": "none", "dependencyAction": "satisfy"}}],
            "default": {"jobAction": "terminate", "dependencyAction": "block"},
        },
        "constraints": {"maxTaskRetryCount": 0},
    }


# -- map and reduce --------------------------------------------------------------------------------


def count_lines(counts: Counter[str]) -> list[str]:
    return [f"{n}\t{word}\n" for word, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def map_step() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import wordcount

    paths = wordcount.input_files(INPUT_FILE_PATH)
    for path in paths:
        data = Path(path).read_bytes()
        try:
            if b"\0" in data:
                raise UnicodeDecodeError("utf-8", data, data.index(b"\0"), data.index(b"\0") + 1, "NUL byte")
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            log(f"bad input {path}: not UTF-8 text ({exc.reason} at byte {exc.start}); skipped")
            return BAD_INPUT
    counts = wordcount.count_words(paths)
    Path("counts.tsv").write_text("".join(count_lines(counts)), encoding="utf-8")
    log(f"{len(paths)} file(s), {sum(counts.values())} words, {len(counts)} distinct")
    return 0


def reduce_step() -> int:
    job_id = os.environ["AZ_BATCH_JOB_ID"]
    api = batch()
    merged: Counter[str] = Counter()
    counted, skipped = [], []
    for task in sorted(api.list_tasks(job_id, f"startswith(id,'{MAP_PREFIX}')"), key=lambda t: t["id"]):
        info = task.get("executionInfo") or {}
        name = task.get("displayName") or task["id"]
        if info.get("result") == "success":
            for line in api.read_task_file(job_id, task["id"], "wd/counts.tsv").decode("utf-8").splitlines():
                count, word = line.split("\t")
                merged[word] += int(count)
            counted.append(name)
        elif info.get("exitCode") == BAD_INPUT:
            skipped.append(name)
        else:
            log(f"map task {task['id']} ({name}) did not succeed: {info.get('failureInfo')}")
            return 1
    results = Path("results") / job_id
    results.mkdir(parents=True, exist_ok=True)
    (results / "counts.tsv").write_text("".join(count_lines(merged)), encoding="utf-8")
    summary = {"inputs": len(counted) + len(skipped), "counted": counted, "skipped": skipped,
               "words": sum(merged.values()), "distinct": len(merged), "api": api.kind}
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"merged {len(counted)} count(s), skipped {len(skipped)} bad input(s): {sum(merged.values())} words")
    return 0


def main(argv: list[str]) -> int:
    steps = {"manager": manager, "map": map_step, "reduce": reduce_step}
    if len(argv) != 1 or argv[0] not in steps:
        print(__doc__, file=sys.stderr)
        return 2
    return steps[argv[0]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
