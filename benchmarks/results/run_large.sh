#!/bin/bash
# Issue 3's n >= 1000 comparison timed interleaved (benchmarks/large_interleaved.py): two
# shards, each pinned to one core.
cd "$(dirname "$0")/../.."
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=$PWD
for i in 0 1; do
  taskset -c $i .venv/bin/python -m benchmarks.large_interleaved --shard $i/2 \
    --out benchmarks/results/large_shard$i.jsonl > benchmarks/results/large_shard$i.log 2>&1 &
done
wait
.venv/bin/python -m benchmarks.large_interleaved --report benchmarks/results/large_shard0.jsonl \
  benchmarks/results/large_shard1.jsonl --md benchmarks/results/large_interleaved.md
