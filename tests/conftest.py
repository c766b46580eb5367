"""Strict test configuration: x64 available, rank promotion is an error, own warnings fail.
XLA runs with its default flags (what users get).

Tests that check float32 behaviour build float32 arrays explicitly; x64 is on so that
float64 oracles are exact to reference.
"""

import os

# scipy's BLAS (OpenBLAS) spins several threads on tiny vectors; on a small machine shared
# with XLA's own threads that oversubscription made scipy's solvers up to 30× slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_make_parametrize_id(config, val, argname):
    """Stable ids for callables (the default embeds a memory address, which differs between
    pytest-xdist workers and makes them collect different tests)."""
    if callable(val) and hasattr(val, "__name__"):
        return val.__name__
    return None
