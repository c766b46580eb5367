#!/bin/bash
# Runs the Newton suite as 2 shards, each pinned to one core (each waits for load < 1.5 first),
# with the quasi-Newton suite's iteration limit (10,000).
exec bash "$(dirname "$0")/run_shards.sh" newton newton --maxiter 10000
