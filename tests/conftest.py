"""Strict test configuration: x64 available, rank promotion is an error, own warnings fail.

Tests that check float32 behaviour build float32 arrays explicitly; x64 is on so that
float64 oracles are exact to reference.
"""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
