#!/bin/bash
# run_before_after.sh OLD_TREE [TAG]: the speed table of a change, old code against new, in
# the same run. OLD_TREE is a checkout of the old commit (e.g. `git worktree add /tmp/old
# <commit>`). Each suite runs the old code pinned to core 0 and the new code pinned to
# core 1 at the same time, so both see the same machine; then once more under the generic
# platform policy (new code only). Results: results/ba_{old,new,generic}_{qn,newton}.jsonl.
set -u
old=$1 tag=${2:-ba}
cd "$(dirname "$0")/../.."
new=$PWD
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
out=$new/benchmarks/results
qn_methods=jopt-lbfgs,scipy-lbfgsb,optax-lbfgs,jaxopt-lbfgs,optx-lbfgs
run() {  # run CORE TREE NAME MODULE METHODS [ENV...]
  local core=$1 tree=$2 name=$3 module=$4 methods=$5; shift 5
  local extra=""
  [ "$module" = newton ] && extra="--no-wait"
  (cd "$tree" && env PYTHONPATH="$tree" "$@" taskset -c "$core" "$new/.venv/bin/python" \
     -m benchmarks.$module --methods "$methods" $extra --out "$out/${tag}_${name}.jsonl" \
     > "$out/${tag}_${name}.log" 2>&1)
}
run 0 "$old" old_qn quasi_newton "$qn_methods" &
run 1 "$new" new_qn quasi_newton "$qn_methods" &
wait
run 0 "$old" old_newton newton jopt-newton-cg,jopt-trust-ncg &
run 1 "$new" new_newton newton jopt-newton-cg,jopt-trust-ncg &
wait
run 0 "$new" generic_qn quasi_newton jopt-lbfgs,scipy-lbfgsb JOPT_PLATFORM=generic &
run 1 "$new" generic_newton newton jopt-newton-cg,jopt-trust-ncg JOPT_PLATFORM=generic &
wait
