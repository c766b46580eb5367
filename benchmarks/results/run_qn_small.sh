#!/bin/bash
# The quasi-Newton suite with `--small-loop-kernels`: jopt.enable_small_loop_kernels() runs
# first in each shard, so XLA:CPU compiles every method's small loops (jopt's and the JAX
# peers') into single kernels. Writes results/qn_small_shard{0,1}.jsonl.
exec bash "$(dirname "$0")/run_shards.sh" quasi_newton qn_small --small-loop-kernels
