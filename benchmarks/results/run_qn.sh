#!/bin/bash
# Runs the quasi-Newton suite as 2 shards, each pinned to one core. Every method runs on a
# problem before the next problem starts, so jopt and its peers see the same machine state
# (an earlier two-phase version, jopt and scipy first, let a drift between the phases
# move every peer's Σ compile by ~45 % against jopt's).
cd "$(dirname "$0")/../.."
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=$PWD
for i in 0 1; do
  taskset -c $i .venv/bin/python -m benchmarks.quasi_newton --shard $i/2 \
    --out benchmarks/results/qn_shard$i.jsonl > benchmarks/results/qn_shard$i.log 2>&1 &
done
wait
