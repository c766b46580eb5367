#!/bin/bash
# Issue 3's n >= 1000 comparison timed interleaved (benchmarks/large_interleaved.py): two
# shards, each pinned to one core, then the report.
here="$(dirname "$0")"
bash "$here/run_shards.sh" large_interleaved large
cd "$here/../.."
.venv/bin/python -m benchmarks.large_interleaved --report benchmarks/results/large_shard0.jsonl \
  benchmarks/results/large_shard1.jsonl --md benchmarks/results/large_interleaved.md
