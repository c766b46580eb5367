#!/bin/bash
# Runs the quasi-Newton suite as 2 shards, each pinned to one core. Every method runs on a
# problem before the next problem starts, so jopt and its peers see the same machine state
# (an earlier two-phase version, jopt and scipy first, let a drift between the phases
# move every peer's Σ compile by ~45 % against jopt's).
exec bash "$(dirname "$0")/run_shards.sh" quasi_newton qn
