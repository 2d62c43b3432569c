#!/bin/bash
# Start task of the word-count pool: runs once on every node when it joins the pool, before any task.
#
# It only prepares and records: no package installs, no root needed, so it behaves the same on an
# Azure Batch Ubuntu 24.04 node and on the local Batch service. The job's tasks find what it wrote in
# $AZ_BATCH_NODE_SHARED_DIR (shared by every task on the node).
set -euo pipefail

shared="${AZ_BATCH_NODE_SHARED_DIR:-$PWD}"
mkdir -p "$shared"

if ! command -v python3 >/dev/null 2>&1; then
    echo "starttask: python3 is required on the node (Ubuntu 24.04 images ship it); none found on PATH" >&2
    exit 1
fi

{
    echo "node=${AZ_BATCH_NODE_ID:-unknown}"
    echo "pool=${AZ_BATCH_POOL_ID:-unknown}"
    echo "prepared_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "kernel=$(uname -sr)"
    echo "python=$(python3 --version 2>&1)"
    echo "greeting=${VAR2:-}"
} > "$shared/batchop-node-info.txt"

echo "starttask: node prepared; wrote $shared/batchop-node-info.txt"
