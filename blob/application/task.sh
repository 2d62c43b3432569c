#!/bin/bash
# Job manager task of the word-count job.
#
# Counts the words of every file under ./input (the resource files Batch downloaded from the `input`
# container into the task's working directory) and writes, under ./results/$AZ_BATCH_JOB_ID/:
#   counts.tsv     "count<TAB>word" lines, most frequent first, ties by word
#   node-info.txt  what the pool's start task recorded about the node (when present)
# The job's outputFiles upload ./results/** so each job's results land under its own job id:
# Azure Batch does not expand variables in an output destination path, so the job id has to be part
# of the uploaded files' relative path (see docs/blob-storage.md).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
input="${WORDCOUNT_INPUT:-input}"
job="${AZ_BATCH_JOB_ID:-local-run}"
out="results/$job"

if [ ! -d "$input" ]; then
    echo "task: no input directory '$input' in $(pwd): check the job manager task's resourceFiles" >&2
    exit 2
fi

mkdir -p "$out"
python3 "$here/wordcount.py" "$input" --output "$out/counts.tsv"
if [ -f "${AZ_BATCH_NODE_SHARED_DIR:-/nonexistent}/batchop-node-info.txt" ]; then
    cp "$AZ_BATCH_NODE_SHARED_DIR/batchop-node-info.txt" "$out/node-info.txt"
fi
echo "task: ${VAR1:-} counted $(wc -l < "$out/counts.tsv") distinct words into $out/counts.tsv"
