"""``batchop demo``: the README's "try it" command, on the local stack, with nothing to configure.

It starts the local stack (``batchop dev up`` with a time scale of 240, so the sample's 4-hour interval
passes in one real minute), uploads the sample ``blob/`` tree with ``batchop blob sync``, applies
``examples/schedule.yaml`` with ``kubectl``, shows ``kubectl get batchschedules`` while the first jobs run,
and prints the word-count result read back from the output container with ``batchop blob get``. Ctrl-C
stops the stack; ``--keep`` leaves it running; ``--once`` stops it after the first result.

``--containers`` runs the containerised sample instead: the word-count image is built from
``blob/application/Containerfile`` on the local base image (``localhost/batchop-wordcount:1``, also tagged
``myregistry.azurecr.io/wordcount:1``, the name the example uses) and ``examples/schedule-container.yaml``
is applied unchanged: the local Batch service runs the job manager task in that image.

The stack is :mod:`devstack` (with :mod:`localbatch`), which an installation from the operator image does not
include: it is imported when the demo runs (:mod:`batchop.cli.localstack`), not when the parser is built.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from batchop.cli import localstack
from batchwire import devenv
from batchwire.exitcodes import FAILURE, OK, UNAVAILABLE, CLIError

if TYPE_CHECKING:
    from devstack.stack import StackInfo

REPO = Path(__file__).resolve().parents[4]
DEMO_TIME_SCALE = 240.0
TOP = 20
#: The sample task's result file (blob/application/task.sh writes results/<jobId>/counts.tsv).
RESULT_SUFFIXES = ("counts.tsv", ".tsv", ".txt")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="try batchop: the seed's word-count schedule end to end on the local stack",
        description="Start the local stack (kube-apiserver, Azurite, local Batch service, operator) with Batch "
        "time running 240 times faster (the 4-hour schedule fires every real minute), upload blob/, apply "
        "examples/schedule.yaml, show `kubectl get batchschedules` as jobs run, and print the word count read "
        "back from the output container. Ctrl-C stops everything; --keep leaves the stack running.",
    )
    parser.add_argument("--dir", type=Path, default=devenv.DEFAULT_DIR,
                        help=f"stack state directory (default: {devenv.DEFAULT_DIR})")
    parser.add_argument("--time-scale", type=float, default=DEMO_TIME_SCALE,
                        help=f"Batch virtual-clock speed (default: {DEMO_TIME_SCALE:g}: PT4H in one minute)")
    parser.add_argument("--keep", action="store_true", help="leave the stack running when the demo ends")
    parser.add_argument("--once", action="store_true", help="end (and stop the stack) after the first result")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for the first result before giving up (default: 600)")
    parser.add_argument("--containers", action="store_true",
                        help="the containerised sample: build the word-count image (blob/application/Containerfile) "
                        "and apply examples/schedule-container.yaml, whose task runs in it")
    parser.add_argument("--schedule", type=Path, default=None,
                        help="the BatchJobSchedule manifest to apply (default: examples/schedule.yaml, with "
                        "--containers examples/schedule-container.yaml)")
    parser.add_argument("--blob-dir", type=Path, default=REPO / "blob",
                        help="the tree to upload, one container per top-level folder (default: blob/)")
    parser.set_defaults(func=run)


def missing_parts(schedule: Path, blob_dir: Path) -> list[str]:
    """What this checkout lacks for the demo (empty when it can run)."""
    with localstack.required():
        from devstack import kube, stack

    missing = []
    if not stack.operator_available():
        missing.append("the operator (`batchop run`, batchop/cli/commands/run.py)")
    if importlib.util.find_spec("batchop.cli.commands.blob") is None:
        missing.append("`batchop blob sync` / `batchop blob get` (batchop/cli/commands/blob.py)")
    if not stack.batch_service_available():
        missing.append("the local Batch service (the localbatch package)")
    if not kube.crd_files(stack.CRD_DIR):
        missing.append(f"the CRD manifests in {stack.CRD_DIR}")
    if not schedule.is_file():
        missing.append(f"the example manifest {schedule}")
    if not blob_dir.is_dir() or not any(blob_dir.iterdir()):
        missing.append(f"the sample tree {blob_dir}")
    return missing


def output_location(schedule: Path) -> tuple[str, str]:
    """(container, path prefix) of the job manager task's main output in the example manifest."""
    document = yaml.safe_load(schedule.read_text())
    task = document["spec"]["jobSpecification"].get("jobManagerTask", {})
    fallback: tuple[str, str] | None = None
    for output in task.get("outputFiles", []):
        blob = output.get("destination", {}).get("blob")
        if not blob:
            continue
        path = str(blob.get("path", ""))
        prefix = path.split("{", 1)[0]
        location = (str(blob["container"]), prefix)
        if "std" not in str(output.get("filePattern", "")):
            return location
        fallback = fallback or location
    if fallback is None:
        raise CLIError(f"{schedule}: spec.jobSpecification.jobManagerTask.outputFiles has no blob destination; "
                       "the demo reads its result from there", FAILURE)
    return fallback


def _batchop(env: dict[str, str], *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchop", *args], env=env, text=True, check=False,
                          capture_output=capture)


def _list_blobs(connection_string: str, container: str, prefix: str) -> list[str]:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(connection_string).get_container_client(container)
    try:
        return sorted(b.name for b in client.list_blobs(name_starts_with=prefix or None))
    except ResourceNotFoundError:
        return []


def run(args: argparse.Namespace) -> int:
    with localstack.required():
        from devstack import kube, stack

    if args.schedule is None:
        args.schedule = REPO / "examples" / ("schedule-container.yaml" if args.containers else "schedule.yaml")
    missing = missing_parts(args.schedule, args.blob_dir)
    if missing:
        raise CLIError("the demo cannot run in this checkout yet; missing: " + "; ".join(missing), UNAVAILABLE)
    container, prefix = output_location(args.schedule)
    if args.containers:
        _prepare_images()
    info = stack.up(args.dir, time_scale=args.time_scale)
    keep = args.keep
    try:
        env = {**os.environ, **info.env()}
        print(f"stack up in {info.startup_seconds:g} s (state in {info.dir}; "
              f"env: . {devenv.env_file(Path(info.dir))})")
        print(f"+ batchop blob sync {args.blob_dir}")
        if _batchop(env, "blob", "sync", str(args.blob_dir)).returncode != 0:
            raise CLIError("batchop blob sync failed (see above)", FAILURE)
        before = set(_list_blobs(info.storage_connection_string, container, prefix))
        print(f"+ kubectl apply -f {args.schedule}")
        applied = kube.kubectl(Path(info.kubeconfig), "apply", "-f", str(args.schedule))
        sys.stdout.write(applied.stdout)
        if applied.returncode != 0:
            raise CLIError(f"kubectl apply failed: {applied.stderr.strip()}", FAILURE)
        result = _watch_until_result(info, container, prefix, before, args.timeout)
        print(f"\n+ batchop blob get {container}/{result}   (the job's output, top {TOP} lines)")
        got = _batchop(env, "blob", "get", f"{container}/{result}", capture=True)
        if got.returncode != 0:
            raise CLIError(f"batchop blob get {container}/{result} failed: {got.stderr.strip()}", FAILURE)
        lines = got.stdout.splitlines()
        print("\n".join(lines[:TOP]) + (f"\n... ({len(lines)} lines in all)" if len(lines) > TOP else ""))
        if args.once:
            _show_job_result(info)
            return OK
        if keep:
            print(f"\nthe stack keeps running: . {devenv.env_file(Path(info.dir))}; stop it with: batchop dev down "
                  f"--dir {args.dir}")
            return OK
        print("\nthe schedule keeps running (a job per real minute); Ctrl-C stops the demo and the stack")
        _watch_until_result(info, container, prefix, before | {result}, float("inf"), follow=True)
        return OK
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the stack" if not keep else "\ninterrupted; the stack keeps running")
        raise
    finally:
        if not keep:
            stack.down(args.dir)


def _prepare_images() -> None:
    """The container engine and the sample's image, before the stack starts (the first run builds the local
    base image: about a minute, with progress)."""
    with localstack.required():
        from devstack import images, product_images

    engine = images.ensure_engine()
    print(f"container engine: {engine.describe()}")
    built = product_images.ensure_wordcount_image()
    state = f"built in {built.seconds:g} s" if built.built else "up to date"
    print(f"image {built.image} = {', '.join(built.aliases)} ({built.size_mb:g} MB, {state}; "
          "from blob/application/Containerfile)")


def _watch_until_result(info: StackInfo, container: str, prefix: str, seen: set[str], timeout: float,
                        *, follow: bool = False) -> str:
    """Print ``kubectl get batchschedules`` when it changes; return the first new output blob (or keep going
    forever with ``follow``, printing each new result's name)."""
    from devstack import kube

    kubeconfig = Path(info.kubeconfig)
    deadline = time.monotonic() + timeout
    last_table = ""
    while time.monotonic() < deadline:
        table = kube.kubectl(kubeconfig, "get", "batchschedules").stdout
        if _without_age(table) != _without_age(last_table):  # AGE alone changes every poll: not news
            print(f"\n$ kubectl get batchschedules   ({time.strftime('%H:%M:%S')})\n{table}", end="")
            last_table = table
        new = [b for b in _list_blobs(info.storage_connection_string, container, prefix)
               if b not in seen and not b.rsplit("/", 1)[-1].startswith(".")]
        results = [b for b in new if b.endswith(RESULT_SUFFIXES)] or new
        if results and not follow:
            return results[0]
        for name in new:
            print(f"new output: {container}/{name}")
            seen.add(name)
        time.sleep(3)
    raise CLIError(f"no output in container {container!r} within {timeout:.0f} s; see the operator and Batch "
                   f"logs in {Path(info.dir) / 'logs'} and `kubectl describe batchschedules`", FAILURE)


def _show_job_result(info: StackInfo, timeout: float = 60.0) -> None:
    """Print ``kubectl get batchschedules`` once every schedule's LAST RESULT is in: the output blob can land a
    poll cycle before the operator mirrors the job's result, and a newcomer's last table should show it."""
    from devstack import kube

    deadline = time.monotonic() + timeout
    while True:
        table = kube.kubectl(Path(info.kubeconfig), "get", "batchschedules").stdout
        if _results_shown(table) or time.monotonic() >= deadline:
            print(f"\n$ kubectl get batchschedules   ({time.strftime('%H:%M:%S')})\n{table}", end="")
            return
        time.sleep(1)


def _results_shown(table: str) -> bool:
    """Whether every row of ``kubectl get batchschedules`` has a LAST RESULT."""
    lines = table.splitlines()
    if len(lines) < 2 or "LAST RESULT" not in lines[0]:
        return False
    start = lines[0].index("LAST RESULT")
    return all(line[start:start + 1].strip() for line in lines[1:] if line.strip())


def _without_age(table: str) -> list[list[str]]:
    """The table's rows without the last column (``AGE``)."""
    return [line.split()[:-1] for line in table.splitlines()]
