#!/bin/bash
# Runs the Newton suite as 2 shards, each pinned to one core (each waits for load < 1.5 first),
# with the quasi-Newton suite's iteration limit (10,000).
cd "$(dirname "$0")/../.."
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=$PWD
for i in 0 1; do
  taskset -c $i .venv/bin/python -m benchmarks.newton --shard $i/2 --maxiter 10000 \
    --out benchmarks/results/newton_shard$i.jsonl > benchmarks/results/newton_shard$i.log 2>&1 &
done
wait
