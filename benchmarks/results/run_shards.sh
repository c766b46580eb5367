#!/bin/bash
# run_shards.sh MODULE NAME [ARGS...]: runs `python -m benchmarks.MODULE --shard i/2 ARGS`
# as 2 shards, each pinned to one core, writing results/NAME_shard{0,1}.jsonl and .log.
# Used by run_qn.sh, run_newton.sh and run_large.sh.
module=$1 name=$2
shift 2
cd "$(dirname "$0")/../.."
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=$PWD
for i in 0 1; do
  taskset -c $i .venv/bin/python -m benchmarks.$module --shard $i/2 "$@" \
    --out benchmarks/results/${name}_shard$i.jsonl > benchmarks/results/${name}_shard$i.log 2>&1 &
done
wait
