"""``batchop dev``: the local stack (etcd + kube-apiserver, Azurite, local Batch service, operator).

``batchop dev setup`` installs the prerequisites (Debian packages, a kube-apiserver built once from Debian's
source and cached under ``~/.cache/batchop/``, Azurite from npm into the same cache, a container engine with
the local base image and the word-count sample's image). ``batchop dev up`` starts the stack in the
background and writes ``<dir>/env``; ``batchop dev status`` shows what runs and on which container engine;
``batchop dev down`` stops everything it started and removes the containers and untagged images it left.

The stack itself is :mod:`devstack`, which an installation from the operator image does not include: it is
imported when an action runs (:mod:`batchop.cli.localstack`), so ``batchop dev --help`` works everywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from batchop.cli import localstack
from batchwire import devenv
from batchwire.exitcodes import FAILURE, OK

EPILOG = f"""\
examples:
  batchop dev up                        # start everything; prints the export lines
  . {devenv.env_file()} && kubectl get batchschedules
  batchop dev up --time-scale 240       # Batch virtual time: PT4H passes in one real minute
  batchop dev status                    # what runs, ports, pids, health
  batchop dev down                      # stop everything, remove the stack's data

The stack writes everything under --dir (default {devenv.DEFAULT_DIR}): stack.json, env, kubeconfig, pids/, logs/.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dev",
        help="run the local stack: kube-apiserver, Azurite, local Batch service, operator",
        description="Run the local development stack: a real kube-apiserver (with etcd) and the CRDs, Azurite "
        "for Blob storage, the local Azure Batch service and the operator, all on loopback with no Azure account.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="dev_command", metavar="ACTION")
    actions.required = True

    up = actions.add_parser("up", help="start the stack in the background and write <dir>/env",
                            description="Start the stack detached (it outlives this command), apply the CRDs, "
                            "point the operator's defaults at the local Batch service and Azurite, write "
                            "<dir>/env with export lines and print them. A stale stack in --dir (from a killed "
                            "run) is reclaimed first; a running one is refused.")
    _dir_flag(up)
    up.add_argument("--time-scale", type=float, default=1.0,
                    help="speed of the Batch service's virtual clock (default 1; 240 makes PT4H one real minute)")
    up.add_argument("--no-operator", action="store_true",
                    help="do not start the operator (for tests and for running `batchop run` yourself)")
    up.set_defaults(func=_up)

    down = actions.add_parser("down", help="stop everything the stack started",
                              description="Stop every process of the stack in --dir (operator, Batch service, "
                              "Azurite, kube-apiserver, etcd), then remove its data, the containers its Batch "
                              "service left and the untagged images the stack built; logs are kept.")
    _dir_flag(down)
    down.set_defaults(func=_down)

    status = actions.add_parser("status", help="show what runs: ports, pids, health",
                                description="Show each process of the stack in --dir with its pid and a health "
                                "check. Exit code 0 when everything recorded runs and is healthy, 1 otherwise.")
    _dir_flag(status)
    status.add_argument("--json", action="store_true", help="print JSON (secrets redacted)")
    status.set_defaults(func=_status)

    setup = actions.add_parser("setup", help="install prerequisites (apt packages, kube-apiserver build, Azurite, "
                               "container engine, images)",
                               description="Install what the stack needs: Debian packages etcd-server, openssl "
                               "(and kubernetes-client when no kubectl is on PATH), the packages to build "
                               "kube-apiserver (golang-go, rsync, make, golang-github-modern-go-reflect2-dev), "
                               "kube-apiserver itself (built once, ~5 min on 2 cores, cached under "
                               "~/.cache/batchop/), Azurite (npm, into the same cache), a container engine "
                               "(docker when its daemon answers, else podman and runc), the local base image "
                               "localhost/batchop-base:bookworm (debootstrap, built once, ~1 min) and the "
                               "word-count sample's image. apt-get needs root; otherwise the error names the "
                               "command to run.")
    setup.set_defaults(func=_setup)


def _dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=devenv.DEFAULT_DIR,
                        help=f"state directory of the stack (default: {devenv.DEFAULT_DIR})")


def _up(args: argparse.Namespace) -> int:
    with localstack.required():
        from devstack import stack

    info = stack.up(args.dir, time_scale=args.time_scale, with_operator=not args.no_operator)
    for line in info.missing:
        print(f"batchop dev: not started: {line}", file=sys.stderr)
    if args.no_operator:
        print("batchop dev: operator not started (--no-operator); run it with: . "
              f"{Path(info.dir) / devenv.ENV_FILE} && batchop run", file=sys.stderr)
    print(f"batchop dev: stack up in {info.startup_seconds:g} s under {info.dir}; "
          f"load it with: . {Path(info.dir) / devenv.ENV_FILE}", file=sys.stderr)
    sys.stdout.write(info.export_lines())
    return OK


def _down(args: argparse.Namespace) -> int:
    with localstack.required():
        from devstack import stack

    stopped = stack.down(args.dir)
    print(f"batchop dev: stopped {', '.join(stopped)}" if stopped else "batchop dev: nothing was running",
          file=sys.stderr)
    return OK


def _status(args: argparse.Namespace) -> int:
    with localstack.required():
        from devstack import stack

    info, rows = stack.status(args.dir)
    ok = bool(rows) and all(r.running and r.healthy for r in rows)
    if args.json:
        print(json.dumps({"dir": str(args.dir.resolve()), "ok": ok, "stack": stack.describe(info) if info else None,
                          "components": [r.__dict__ for r in rows]}, indent=2))
        return OK if ok else FAILURE
    if not rows:
        print(f"no stack in {args.dir.resolve()} (start one with: batchop dev up --dir {args.dir})")
        return FAILURE
    print(f"{'COMPONENT':<16}{'PID':>8}  {'STATE':<10}{'HEALTH':<10}DETAIL")
    for row in rows:
        state = "running" if row.running else "stopped"
        health = "ok" if row.healthy else "failing"
        print(f"{row.name:<16}{row.pid or '-':>8}  {state:<10}{health:<10}{row.detail}")
    if info is not None:
        for line in info.missing:
            print(f"not started: {line}")
        print(f"container engine: {stack.describe_engine(info.container_engine)}")
        print(f"env: {Path(info.dir) / devenv.ENV_FILE}")
    return OK if ok else FAILURE


def _setup(args: argparse.Namespace) -> int:
    with localstack.required():
        from devstack import stack

    for name, where in stack.setup().items():
        print(f"{name}: {where}")
    return OK
