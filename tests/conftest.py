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
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(params=["auto", "generic"])
def each_platform_policy(request):
    """Run a test under both platform policies: ``auto`` (what CPU users get, XLA:CPU
    options and outlining) and ``generic`` (the plain path GPUs and TPUs take). Programs
    are keyed by the policy's plan, so the second run compiles its own."""
    import jopt

    saved = jopt.platform_policy()
    jopt.platform_policy(request.param)
    try:
        yield request.param
    finally:
        jopt.platform_policy(saved)


def pytest_make_parametrize_id(config, val, argname):
    """Stable ids for callables (the default embeds a memory address, which differs between
    pytest-xdist workers and makes them collect different tests)."""
    if callable(val) and hasattr(val, "__name__"):
        return val.__name__
    return None
