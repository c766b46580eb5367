"""Strict test configuration: x64 available, rank promotion is an error, own warnings fail.

Tests that check float32 behaviour build float32 arrays explicitly; x64 is on so that
float64 oracles are exact to reference.
"""

import os

# scipy's BLAS (OpenBLAS) spins several threads on tiny vectors; on a small machine shared
# with XLA's own threads that oversubscription made scipy's solvers up to 30× slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# The suite is dominated by XLA:CPU compile time of many small programs. XLA's older
# (non-"fusion emitter") CPU code generator compiles them ~1.6× faster with the same
# results to rounding; set JOPT_TEST_XLA_DEFAULTS=1 to test with XLA's defaults instead.
if not os.environ.get("JOPT_TEST_XLA_DEFAULTS"):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_use_fusion_emitters=false").strip()

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_make_parametrize_id(config, val, argname):
    """Stable ids for callables (the default embeds a memory address, which differs between
    pytest-xdist workers and makes them collect different tests)."""
    if callable(val) and hasattr(val, "__name__"):
        return val.__name__
    return None
