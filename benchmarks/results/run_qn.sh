#!/bin/bash
# Runs the quasi-Newton suite as 2 shards, each pinned to one core; priority methods first.
cd "$(dirname "$0")/../.."
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=$PWD
for i in 0 1; do
  (
    taskset -c $i .venv/bin/python -m benchmarks.quasi_newton --shard $i/2 \
      --methods jopt-lbfgs,scipy-lbfgsb --out benchmarks/results/qn_shard$i.jsonl
    taskset -c $i .venv/bin/python -m benchmarks.quasi_newton --shard $i/2 \
      --out benchmarks/results/qn_shard$i.jsonl
  ) > benchmarks/results/qn_shard$i.log 2>&1 &
done
wait
