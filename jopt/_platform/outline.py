"""One XLA:CPU function per program: a solver loop compiled into a single kernel.

A ``call`` whose frontend attribute ``xla_cpu_small_call`` is "true" is emitted by XLA:CPU
as one function (``ThunkEmitter::EmitCallThunk`` -> ``ComputationKernelEmitter``; the
attribute is what ``SmallWhileLoopHoistingPass`` puts on the calls it creates), and its
call inliner keeps a call marked ``inlineable="false"``. :func:`outlined_call` wraps a
computation in such a call, so a solver's whole program costs one kernel launch per call
instead of one per operation and iteration.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt._platform.probe import xla_metadata

# The legacy emitter behind it cannot emit everything the thunk runtime can, and some
# failures abort the process (a CHECK in IrEmitter), so a computation is outlined only
# when its jaxpr passes `outlinable`:
# * no primitive that lowers to a custom call, scatter, sort, FFT, collective or
#   infeed/outfeed (the pass's own exclusions; LAPACK linear algebra and callbacks are
#   custom calls on the CPU);
# * no reduction or product over more than `_MAX_REDUCED_BYTES`, and no matrix product
#   (a product with a result of rank >= 2): XLA:CPU gives those to YNNPACK "custom"
#   fusions, which the legacy emitter refuses ("Fusion kind not implemented on CPU": at
#   n = 10,000, and for a small MLP's matrix products). Such refusals are errors at
#   compile time, so jopt.minimize also retries without outlining when one occurs.
#   A program compiled with `FUSIONS_OFF` (jopt._platform.options) gets no
#   YNNPACK fusions, so there the size limit is lifted (`library_fusions=False`);
#   matrix products stay refused;
# * array constants: the emitter aborted (IrEmitter::EmitGlobalBufferPointer, "All or
#   none of the slices should have an explicit index") on a loop whose objective used a
#   closed-over 3 x 3 matrix in a product, and, even with the arrays passed to the call as
#   arguments, on closed-over arrays of 10,240 and 16,000 bytes (9,600 bytes and below
#   compiled). `outlined_call` therefore passes the arrays the loop closes over as
#   arguments, and a loop is not outlined when one of them is over `_MAX_CONST_BYTES`
#   or when it holds array constants deeper (a jitted function's own constants, array
#   literals). Data passed in ``args`` are inputs, never constants.

_OUTLINE_ENV = "JOPT_OUTLINE_LOOPS"
_outline_enabled: bool | None = None  # None: from the environment


def outline_solver_loops(enabled: bool | None = None) -> bool:
    """Turn jopt's per-program loop outlining on or off; returns the setting in effect.

    ``jopt.minimize`` compiles its own loop as one XLA:CPU function when it can (see the
    module's notes). ``outline_solver_loops(False)`` restores the usual code generation
    for programs compiled from then on (the default for new processes can be set with
    the environment variable ``JOPT_OUTLINE_LOOPS=0``); ``None`` only reads the setting.
    Turn it off to reproduce results bit for bit from before, or if XLA:CPU fails on a
    loop that :func:`outlinable` let through (please report the objective).
    """
    global _outline_enabled
    if enabled is not None:
        if not isinstance(enabled, bool):
            raise TypeError(f"`enabled` must be True, False or None, got {enabled!r}.")
        _outline_enabled = enabled
    if _outline_enabled is None:
        return os.environ.get(_OUTLINE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")
    return _outline_enabled


_MAX_REDUCED_BYTES = 1 << 15  # 4,096 float64: larger reductions became YNNPACK fusions
_MAX_CONST_BYTES = 1 << 12  # 4 KiB, 2.3x below the smallest array that aborted
_DENIED = frozenset({
    "sort", "top_k", "approx_top_k", "fft", "rng_bit_generator", "infeed", "outfeed",
    "pure_callback", "io_callback", "debug_callback", "debug_print", "ffi_call",
    "custom_call", "sharding_constraint", "mesh_cast", "shard_map", "axis_index",
    "psum", "pmax", "pmin", "ppermute", "pbroadcast", "all_gather", "all_to_all",
    "reduce_scatter", "psum_invariant", "cholesky", "lu", "lu_pivots_to_permutation",
    "qr", "geqrf", "geqp3", "householder_product", "orgqr", "eig", "eigh", "svd",
    "schur", "hessenberg", "tridiagonal", "tridiagonal_solve", "triangular_solve",
})
_REDUCTIONS = frozenset({
    "dot_general", "reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
    "reduce_or", "reduce_xor", "argmax", "argmin", "reduce_precision_sum", "cumsum",
    "cumprod", "cummax", "cummin", "cumlogsumexp", "reduce",
})


def nbytes(value: Any) -> int:
    """Bytes of an array, an abstract value or a jaxpr variable (0 for tokens and the like)."""
    aval = getattr(value, "aval", value)
    shape, dtype = getattr(aval, "shape", None), getattr(aval, "dtype", None)
    if shape is None or dtype is None:
        return 0
    return math.prod(shape) * np.dtype(dtype).itemsize


def _sub_jaxprs(value):
    """(jaxpr, consts) pairs held by an equation parameter (``jax.extend.core.
    jaxprs_in_params`` drops a closed jaxpr's constants, which this check needs)."""
    if hasattr(value, "eqns"):
        yield value, ()
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        yield value.jaxpr, tuple(getattr(value, "consts", ()))
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _sub_jaxprs(item)


def _is_scalar_or_traced(const) -> bool:
    return isinstance(const, jax.core.Tracer) or len(getattr(const, "shape", ())) == 0


def _jaxpr_outlinable(jaxpr, consts, max_reduced: float) -> bool:
    """``jaxpr`` (whose concrete ``consts`` would be embedded as constants) passes."""
    if not all(_is_scalar_or_traced(c) for c in consts):
        return False
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in _DENIED or "scatter" in name or "callback" in name:
            return False
        if name in _REDUCTIONS and any(nbytes(v) > max_reduced for v in eqn.invars):
            return False
        if name == "dot_general" and len(getattr(eqn.outvars[0].aval, "shape", ())) >= 2:
            return False  # a matrix product: XLA:CPU may give it to a library fusion
        if not all(_is_scalar_or_traced(getattr(v, "val", 0)) for v in eqn.invars):
            return False  # an array literal, embedded as a constant
        for param in eqn.params.values():
            for sub, sub_consts in _sub_jaxprs(param):
                if not _jaxpr_outlinable(sub, sub_consts, max_reduced):
                    return False
    return True


def outlinable(closed_jaxpr: Any, *, library_fusions: bool = True) -> bool:
    """Whether XLA:CPU's single-function emitter can take ``closed_jaxpr`` when its
    top-level constants come in as arguments (:func:`outlined_call` passes them so);
    see the list above. Conservative: ``False`` only costs speed.

    ``library_fusions``: whether the program is compiled with XLA:CPU's YNNPACK fusions
    (the default). Pass ``False`` for a program compiled with
    YNNPACK fusions turned off: its reductions may then be of any size.
    """
    if not isinstance(library_fusions, bool):
        raise TypeError(f"`library_fusions` must be True or False, got {library_fusions!r}.")
    if any(not isinstance(c, jax.core.Tracer) and nbytes(c) > _MAX_CONST_BYTES
           for c in closed_jaxpr.consts):
        return False
    max_reduced = _MAX_REDUCED_BYTES if library_fusions else math.inf
    return _jaxpr_outlinable(closed_jaxpr.jaxpr, (), max_reduced)


def outlined_call(closed_jaxpr: Any, out_tree: Any, live: Any, *args: Any) -> Any:
    """The computation ``closed_jaxpr`` applied to ``args``, compiled by XLA:CPU as one
    function (one kernel launch, the loop's control flow inside it) instead of one kernel
    per operation; its result as the pytree ``out_tree``.

    Every buffer the call touches must be one of its own arguments or results: the
    emitter aborted (``IrEmitter::EmitGlobalBufferPointer``, "All or none of the slices
    should have an explicit index") on an array the objective closed over, an empty
    array, a state field XLA had folded to a constant (constant buffers), an argument
    the loop never reads, and a loop-invariant field returned as it came in. So the
    top-level constants of ``closed_jaxpr`` are passed as arguments; the arguments go in
    as one buffer per dtype (raveled and concatenated), selected on ``live``, a traced
    boolean that is always true but that XLA cannot fold (a distinct fill value per
    buffer); inside, a flag reads every buffer and every result is selected on it; empty
    arrays are made inside the call. The caller checks :func:`outlinable` first; other
    backends ignore the attributes.
    """
    leaves = [*closed_jaxpr.consts, *jax.tree.leaves(args)]
    shapes = [jax.ShapeDtypeStruct(jnp.shape(leaf), jnp.result_type(leaf)) for leaf in leaves]
    # One buffer per dtype: the leaves raveled, concatenated and selected on `live` (one
    # kernel per dtype before the call, instead of one per leaf: a small solve's state
    # has ~20 leaves, and each kernel costs ~0.1-0.2 µs per call). Empty leaves are made
    # inside the call (an empty array is always a constant).
    dtypes = sorted({str(sh.dtype) for sh in shapes if math.prod(sh.shape)})
    packed = [jnp.where(live, jnp.concatenate([jnp.ravel(leaf) for leaf, sh
                                               in zip(leaves, shapes, strict=True)
                                               if str(sh.dtype) == dt and math.prod(sh.shape)]),
                        jnp.asarray(k + 1, dt))
              for k, dt in enumerate(dtypes)]
    nconsts = len(closed_jaxpr.consts)

    def run(live, packed):
        offsets = dict.fromkeys(dtypes, 0)
        full = []
        for sh in shapes:
            size = math.prod(sh.shape)
            if not size:
                full.append(jnp.zeros(sh.shape, sh.dtype))
                continue
            dt = str(sh.dtype)
            buf = packed[dtypes.index(dt)]
            full.append(buf[offsets[dt]:offsets[dt] + size].reshape(sh.shape))
            offsets[dt] += size
        # The attributes are for the call alone: calls inside it stay inlineable.
        with xla_metadata()(xla_cpu_small_call="false", inlineable="true"):
            out = jax.core.eval_jaxpr(closed_jaxpr.jaxpr, full[:nconsts], *full[nconsts:])
            # Every argument must be used, and no result may be an argument passed through
            # (a loop-invariant field): the emitter aborted on both. `anchor` (still
            # always true) reads every argument, and every result is selected on it.
            anchor = live
            for buf in packed:
                anchor = anchor | (buf[0] == jnp.zeros((), buf.dtype))
            return [jnp.where(anchor, o, jnp.full_like(o, i)) for i, o in enumerate(out)]

    set_xla_metadata = xla_metadata()
    with set_xla_metadata(xla_cpu_small_call="true", inlineable="false"):
        out = jax.jit(run)(live, packed)
    return jax.tree.unflatten(out_tree, out)
