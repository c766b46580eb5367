"""Uniform quantization (2-8 bits), fake quantization for QAT, and sizes in bytes.

Quantizers (round to nearest, half to even; Jacob et al. 2018, §2; Krishnamoorthi 2018, §2):

* symmetric: ``q = clip(round(x / Δ), −Q, Q)`` with ``Q = 2^(b−1) − 1``, ``Δ = max|x| / Q``,
  zero point 0; codes stored as ``int8``;
* affine (asymmetric): ``q = clip(round(x / Δ) + z, 0, 2^b − 1)`` with the range
  ``[min(x, 0), max(x, 0)]`` (so 0 is exactly representable), ``Δ = range / (2^b − 1)``,
  ``z = round(−min / Δ)``; codes stored as ``uint8``.

Dequantization is ``Δ (q − z)``. Ranges are per tensor (``axis=None``) or per channel along
``axis`` (one ``Δ`` and ``z`` per slice; they keep the reduced axes with size 1, so they
broadcast against the codes without rank promotion). An all-zero tensor or channel gets
``Δ = 1``.

Sizes (:func:`quantized_size`) count packed codes ``ceil(n · b / 8)`` bytes, one scale per
tensor or channel (``scale_bytes``, default 4 = float32) and, for affine quantization, one
byte per zero point; leaves kept in floating point count ``n × itemsize``.

Non-finite values (NaN, inf) in the weights, traces, a given ``scale``/``zero_point`` or a
budget raise a ``ValueError`` naming the argument in eager calls: a NaN weight would
otherwise silently collapse the range (``quantize([0.5, nan, 1.0], 4)`` gave scale 1 and
code 0 for the NaN). Under ``jit``/``vmap``/``grad`` the values are traced and cannot be
checked in Python; there the non-finite values propagate instead of hiding: a tensor (or
channel) holding NaN or inf gets a NaN or inf ``scale``, so the values :func:`dequantize`
/ :func:`fake_quantize` give for it are NaN or inf (its integer codes are meaningless),
and a NaN or inf trace gives NaN or inf sensitivities. Check the results
with ``jnp.isfinite`` there, or call
:func:`jopt.compress.mixed_precision.allocate_bits` (always eager), which checks.

Bit widths for a pytree are an ``int`` (same for every quantized leaf) or a pytree of
ints like the parameters, where ``0`` means "keep this leaf in floating point". Inside
``jit`` the widths (not the ``0``s) may be traced integer scalars, so one compiled function
evaluates many allocations (and ``vmap`` runs over widths); sizes need concrete widths.

References
----------
* Jacob, B. et al. (2018). Quantization and training of neural networks for efficient
  integer-arithmetic-only inference. CVPR, §2.1 (affine scheme), §3 (simulated quantization).
* Krishnamoorthi, R. (2018). Quantizing deep convolutional networks for efficient inference:
  a whitepaper. arXiv:1806.08342, §2 (symmetric / asymmetric, per-channel), §3.1 (STE).
* Bengio, Y., Léonard, N. & Courville, A. (2013). Estimating or propagating gradients through
  stochastic neurons for conditional computation. arXiv:1308.3432 (straight-through estimator).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt._checks import check_float_tree, check_positive_int, is_concrete_number
from jopt.compress.prune import LeafSelector, resolve_leaf_selector

PyTree = Any
Bits = int | PyTree

__all__ = [
    "SizeReport",
    "dequantize",
    "fake_quantize",
    "fake_quantize_tree",
    "quantization_error",
    "quantize",
    "quantized_size",
]
# The checks and per-leaf helpers without an underscore (check_bits, leaf_bytes, ...) are
# shared with jopt.compress.mixed_precision; they are not part of the public API.



# ---------------------------------------------------------------------------- checks


def check_bits(name: str, bits: Any, *, allow_zero: bool = False,
                allow_traced: bool = False) -> Any:
    """A bit width: a Python int in 2..8 (or 0), or — if allowed — a traced integer scalar."""
    if isinstance(bits, jax.Array | np.ndarray | np.integer):
        if jnp.shape(bits) != () or not jnp.issubdtype(jnp.result_type(bits), jnp.integer):
            raise TypeError(f"`{name}` must be an int in 2..8, got {bits!r}.")
        if is_concrete_number(bits):
            bits = int(bits)
        elif allow_traced:
            return bits  # traced: checked only where concrete
        else:
            raise TypeError(f"`{name}` must be a concrete int here (it sets a size), got a "
                            f"traced value.")
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise TypeError(f"`{name}` must be a Python int in 2..8, got {bits!r}.")
    if allow_zero and bits == 0:
        return 0
    if not 2 <= bits <= 8:
        extra = " (or 0 to keep a leaf in floating point)" if allow_zero else ""
        raise ValueError(f"`{name}` must be an int in 2..8{extra}, got {bits}.")
    return int(bits)


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a Python bool, got {value!r}.")


def _normalize_axis(axis: Any, ndim: int, name: str = "axis") -> int | None:
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"`{name}` must be an int or None, got {axis!r}.")
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"`{name}`={axis} is out of range for an array of rank {ndim}; use None for "
            f"per-tensor quantization or an axis in [{-ndim}, {ndim})."
        )
    return int(axis) % ndim


def _qrange(bits: Any, symmetric: bool) -> tuple[Any, Any]:
    """Code range: Python ints for an int ``bits``, int32 arrays for a traced one."""
    if not isinstance(bits, int):
        bits = jnp.asarray(bits, jnp.int32)
        one = jnp.ones((), jnp.int32)
        if symmetric:
            q = jnp.left_shift(one, bits - 1) - 1
            return -q, q
        return jnp.zeros((), jnp.int32), jnp.left_shift(one, bits) - 1
    if symmetric:
        q = 2 ** (bits - 1) - 1
        return -q, q
    return 0, 2**bits - 1


def _code_dtype(symmetric: bool) -> Any:
    return jnp.int8 if symmetric else jnp.uint8


WHY_WEIGHTS = ("Quantization needs finite values: a NaN or inf makes the range, and so the "
                "scale and every code, meaningless.")


def describe_nonfinite(label: str, bad: np.ndarray, why: str) -> str:
    """The error text for the non-finite entries ``bad`` (a boolean array) of ``label``."""
    where = f", first at index {tuple(int(i) for i in np.argwhere(bad)[0])}" if bad.ndim else ""
    return (f"{label} holds NaN or inf ({int(bad.sum())} of {bad.size} entries non-finite"
            f"{where}). {why} Replace or mask the non-finite entries first (e.g. with "
            f"`jnp.nan_to_num`), or find where they came from (a diverged run?).")


def check_finite_tree(name: str, tree: PyTree, why: str) -> None:
    """Raise naming the first leaf of ``tree`` holding NaN or inf; traced leaves pass unchecked."""
    check_finite_leaves(name, jax.tree_util.tree_leaves_with_path(tree), why)


def check_finite_leaves(name: str, leaves_with_path: Sequence[tuple[Any, Any]],
                         why: str) -> None:
    """:func:`check_finite_tree` on some ``(path, leaf)`` pairs of the pytree ``name``."""
    pairs = [(path, leaf) for path, leaf in leaves_with_path
             if not isinstance(leaf, jax.core.Tracer)]
    if not pairs:
        return
    # Evaluated now even inside a jit trace (the leaves are concrete constants there).
    with jax.ensure_compile_time_eval():
        flags = jax.device_get([jnp.all(jnp.isfinite(leaf)) for _, leaf in pairs])
    for (path, leaf), ok in zip(pairs, flags, strict=True):
        if not ok:
            label = f"`{name}`" + (f" leaf {jax.tree_util.keystr(path)}" if path else "")
            with jax.ensure_compile_time_eval():
                bad = ~np.asarray(jnp.isfinite(leaf))  # in the leaf's JAX dtype, as checked
            raise ValueError(describe_nonfinite(label, bad, why))


def _check_given_range(scale: jax.Array, zero_point: jax.Array | None) -> None:
    """A concrete calibrated ``scale`` must be finite and > 0, a ``zero_point`` finite."""
    check_finite_tree("scale", scale, "It divides `x`, so every code would be garbage.")
    if zero_point is not None:
        check_finite_tree("zero_point", zero_point, "It shifts every code.")
    if isinstance(scale, jax.core.Tracer):
        return
    with jax.ensure_compile_time_eval():
        smallest = float(jnp.min(scale))
    if not smallest > 0:
        raise ValueError(
            f"`scale` must be > 0 everywhere (the quantization step), got min "
            f"{smallest!r}. Use `quantize(x, bits)` without `scale` to take the "
            f"range from `x`, or calibrate a positive step.")


# ------------------------------------------------------------------------ quantizers


def _range_params(x: jax.Array, bits: int, symmetric: bool,
                  axis: int | None) -> tuple[jax.Array, jax.Array]:
    """Scale ``Δ`` (dtype of ``x``) and zero point (float, integer-valued) from x's range."""
    reduce = None if axis is None else tuple(i for i in range(x.ndim) if i != axis)
    keep = axis is not None
    qmin, qmax = _qrange(bits, symmetric)
    one = jnp.ones((), x.dtype)
    if symmetric:
        amax = jnp.max(jnp.abs(x), axis=reduce, keepdims=keep)
        # `== 0`, not `> 0`: a NaN range must give a NaN scale, not the all-zero tensor's 1.
        scale = jnp.where(amax == 0, one, amax / qmax)
        return scale, jnp.zeros_like(scale)
    lo = jnp.minimum(jnp.min(x, axis=reduce, keepdims=keep), 0)
    hi = jnp.maximum(jnp.max(x, axis=reduce, keepdims=keep), 0)
    scale = jnp.where(hi == lo, one, (hi - lo) / (qmax - qmin))  # NaN range: NaN scale
    zero_point = jnp.clip(jnp.round(-lo / scale), qmin, qmax)
    return scale, zero_point


def _prepare(x: Any, bits: int, symmetric: bool, axis: int | None, scale: Any,
             zero_point: Any, x_name: str | None = "x",
             ) -> tuple[jax.Array, int, int | None, jax.Array, jax.Array]:
    """Checked arguments of a quantizer; ``x_name=None`` when the caller checked ``x``'s values."""
    bits = check_bits("bits", bits, allow_traced=True)
    check_bool("symmetric", symmetric)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`x` must be a floating-point array, got dtype {x.dtype}.")
    axis = _normalize_axis(axis, x.ndim)
    if x_name is not None:
        check_finite_tree(x_name, x, WHY_WEIGHTS)
    if scale is None:
        if zero_point is not None:
            raise ValueError("`zero_point` was given without `scale`; pass both or neither.")
        s, z = _range_params(x, bits, symmetric, axis)
        return x, bits, axis, s, z
    scale = jnp.asarray(scale, x.dtype)
    if symmetric and zero_point is not None:
        raise ValueError("`zero_point` must be None with `symmetric=True` (it is 0).")
    z = jnp.zeros_like(scale) if zero_point is None else jnp.asarray(zero_point).astype(x.dtype)
    for name, arr in (("scale", scale), ("zero_point", z)):
        if arr.ndim not in (0, x.ndim) or jnp.broadcast_shapes(arr.shape, x.shape) != x.shape:
            raise ValueError(
                f"`{name}` of shape {arr.shape} does not broadcast against `x` of shape "
                f"{x.shape}; use a scalar or keep the reduced axes with size 1."
            )
    _check_given_range(scale, None if zero_point is None else z)
    return x, bits, axis, scale, z


def quantize(
    x: jax.Array,
    bits: int,
    *,
    symmetric: bool = True,
    axis: int | None = None,
    scale: jax.Array | None = None,
    zero_point: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Uniform quantization of ``x`` to ``bits``-bit integer codes (round to nearest).

    Args:
      x: float array.
      bits: bit width, a Python int in 2..8 — or a traced integer scalar (e.g. to
        ``vmap`` over bit widths without recompiling; then unchecked).
      symmetric: symmetric (zero point 0, codes in ``[−(2^(b−1)−1), 2^(b−1)−1]``, int8) or
        affine (codes in ``[0, 2^b−1]``, uint8). See the module docstring for the formulas.
      axis: ``None`` for one range per tensor, or the channel axis for one per channel.
      scale, zero_point: a fixed (calibrated) range instead of ``x``'s own; values
        outside it are clipped. Shapes: scalar or broadcastable with ``x``'s rank.

    Returns:
      ``(codes, scale, zero_point)``: codes (int8/uint8, shape of ``x``), scale (dtype of
      ``x``) and zero point (code dtype), the latter two scalar (per tensor) or with the
      reduced axes kept as size 1 (per channel).

    Raises:
      ValueError: in an eager call, when ``x`` holds NaN or inf, or a given ``scale`` is
        not finite and > 0, or a given ``zero_point`` is not finite. Traced values cannot
        be checked: there a NaN or inf in ``x`` gives a NaN or inf ``scale`` for its tensor
        or channel (so its dequantized values are NaN or inf and its codes meaningless).
    """
    return _quantize(x, bits, symmetric, axis, scale, zero_point, "x")


def _quantize(x: Any, bits: Any, symmetric: bool, axis: int | None, scale: Any,
              zero_point: Any, x_name: str | None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`quantize`, with ``x``'s values checked under the name ``x_name`` (None: not)."""
    x, bits, axis, s, z = _prepare(x, bits, symmetric, axis, scale, zero_point, x_name)
    qmin, qmax = _qrange(bits, symmetric)
    codes = jnp.clip(jnp.round(x / s) + z, qmin, qmax)
    dtype = _code_dtype(symmetric)
    return codes.astype(dtype), s, z.astype(dtype)


def dequantize(codes: jax.Array, scale: jax.Array, zero_point: jax.Array) -> jax.Array:
    """``scale · (codes − zero_point)`` in the dtype of ``scale``."""
    scale = jnp.asarray(scale)
    if not jnp.issubdtype(scale.dtype, jnp.floating):
        raise TypeError(f"`scale` must be floating point, got dtype {scale.dtype}.")
    dt = scale.dtype
    return scale * (jnp.asarray(codes).astype(dt) - jnp.asarray(zero_point).astype(dt))


def fake_quantize(
    x: jax.Array,
    bits: int,
    *,
    symmetric: bool = True,
    axis: int | None = None,
    scale: jax.Array | None = None,
    zero_point: jax.Array | None = None,
) -> jax.Array:
    """``dequantize(quantize(x))`` with a straight-through gradient, for QAT.

    The forward value is exactly the dequantized grid value. The gradient with respect
    to ``x`` is the straight-through estimate (Bengio et al. 2013; Jacob et al. 2018, §3;
    Krishnamoorthi 2018, §3.1): the identity inside the quantization range and zero
    outside it. With a given ``scale`` (and ``zero_point``), "outside" means clipped: the
    unclipped code ``round(x/Δ) + z`` falls outside ``[q_min, q_max]``. Without one, the
    range is ``x``'s own ``[min, max]``, which contains every entry, so the gradient is
    the identity everywhere (an extreme entry that the affine zero-point rounding pushes
    one code past the end is clipped in value but not in gradient). The range is treated
    as a constant. Arguments as in :func:`quantize`.

    Implemented by the stop-gradient identity ``q + (x_in − stop_gradient(x_in))`` where
    ``x_in`` is ``x`` on the unclipped entries and 0 elsewhere: the added term is exactly
    zero in the forward pass.

    Non-finite ``x`` (or ``scale``/``zero_point``) raise as in :func:`quantize`; traced,
    a NaN or inf in a tensor (channel) makes its output NaN or inf.
    """
    return _fake_quantize(x, bits, symmetric, axis, scale, zero_point, "x")


def _fake_quantize(x: Any, bits: Any, symmetric: bool, axis: int | None, scale: Any,
                   zero_point: Any, x_name: str | None) -> jax.Array:
    """:func:`fake_quantize`, with ``x``'s values checked under the name ``x_name`` (None: not)."""
    own_range = scale is None
    x, bits, axis, s, z = _prepare(x, bits, symmetric, axis, scale, zero_point, x_name)
    qmin, qmax = _qrange(bits, symmetric)
    s, z = jax.lax.stop_gradient(s), jax.lax.stop_gradient(z)
    raw = jnp.round(jax.lax.stop_gradient(x) / s) + z
    q = s * (jnp.clip(raw, qmin, qmax) - z)
    if own_range:
        return q + (x - jax.lax.stop_gradient(x))
    inside = (raw >= qmin) & (raw <= qmax)
    x_in = jnp.where(inside, x, jnp.zeros((), x.dtype))
    return q + (x_in - jax.lax.stop_gradient(x_in))


def quantization_error(
    x: jax.Array, bits: int, *, symmetric: bool = True, axis: int | None = None
) -> jax.Array:
    """Squared quantization perturbation ``‖Q_b(x) − x‖²`` (a scalar in ``x``'s dtype).

    Non-finite ``x`` raises as in :func:`quantize`; traced, it gives a NaN error.
    """
    return quantization_error_unchecked(x, bits, symmetric, axis, "x")


def quantization_error_unchecked(x: Any, bits: Any, symmetric: bool, axis: int | None,
                        x_name: str | None) -> jax.Array:
    """:func:`quantization_error`, with ``x``'s values checked as ``x_name`` (None: not)."""
    codes, s, z = _quantize(x, bits, symmetric, axis, None, None, x_name)
    return jnp.sum((dequantize(codes, s, z) - x) ** 2)


# ----------------------------------------------------------------------------- trees


def leaf_axis(leaf: Any, channel_axis: int | None) -> int | None:
    """Per-channel axis for a leaf: ``channel_axis`` on leaves of rank >= 2, else None."""
    ndim = jnp.ndim(leaf)
    if channel_axis is None or ndim < 2:
        return None
    return _normalize_axis(channel_axis, ndim, "channel_axis")


def _resolve_bits(params: PyTree, bits: Bits, quantizable: LeafSelector, *,
                  allow_traced: bool = True) -> list[Any]:
    """One bit width per leaf (0 = float) from an int + ``quantizable`` or a pytree of ints."""
    check_float_tree("params", params)
    flags = resolve_leaf_selector("quantizable", quantizable, params)
    single = isinstance(bits, numbers.Integral | jax.Array | np.ndarray) and jnp.shape(bits) == ()
    if single and not isinstance(bits, bool):
        b = check_bits("bits", bits, allow_traced=allow_traced)
        return [b if f else 0 for f in flags]
    if quantizable is not None:
        raise ValueError("Pass `quantizable` only with a single int `bits`; a pytree of bit "
                         "widths marks float leaves with 0.")
    if jax.tree.structure(bits) != jax.tree.structure(params):
        raise ValueError(
            f"`bits` must be an int or a pytree of ints with the structure of `params`.\n"
            f"  params: {jax.tree.structure(params)}\n  bits: {jax.tree.structure(bits)}"
        )
    return [check_bits("bits", b, allow_zero=True, allow_traced=allow_traced)
            for b in jax.tree.leaves(bits)]


def fake_quantize_tree(
    params: PyTree,
    bits: Bits,
    *,
    symmetric: bool = True,
    channel_axis: int | None = None,
    quantizable: LeafSelector = None,
) -> PyTree:
    """:func:`fake_quantize` on every leaf: the parameters a quantized model computes with.

    Args:
      params: pytree of float arrays.
      bits: an int in 2..8 for every ``quantizable`` leaf, or a pytree of ints like
        ``params`` (``0`` = leave that leaf in floating point, e.g. from
        :func:`allocate_bits`). Widths may be traced integer scalars (not the ``0`` entries), so
        one compiled function evaluates many allocations.
      symmetric: symmetric or affine quantizer.
      channel_axis: per-channel axis for leaves of rank >= 2 (e.g. ``-1``, the output
        axis of a ``(in, out)`` dense kernel); ``None`` and rank < 2 leaves: per tensor.
      quantizable: leaves to quantize when ``bits`` is an int (``None`` = all), as in
        :func:`jopt.compress.compute_mask`'s ``prunable``.

    Returns:
      A pytree like ``params`` (same dtypes); gradients pass straight through.

    Raises:
      ValueError: in an eager call, naming the leaf of ``params`` that holds NaN or inf
        (traced: that leaf's output is NaN or inf, as in :func:`fake_quantize`).
    """
    widths = _resolve_bits(params, bits, quantizable)
    check_finite_tree("params", params, WHY_WEIGHTS)  # one sync for all leaves
    leaves, treedef = jax.tree.flatten(params)
    out = [
        leaf if isinstance(b, int) and b == 0 else _fake_quantize(
            leaf, b, symmetric, leaf_axis(leaf, channel_axis), None, None, None)
        for leaf, b in zip(leaves, widths, strict=True)
    ]
    return jax.tree.unflatten(treedef, out)


class SizeReport(NamedTuple):
    """Storage of a quantized model in bytes (Python ints)."""

    total: int
    codes: int
    scales: int
    zero_points: int
    unquantized: int


def leaf_bytes(leaf: Any, bits: int, symmetric: bool, channel_axis: int | None,
                scale_bytes: int) -> tuple[int, int, int, int]:
    """(codes, scales, zero points, float) bytes for one leaf."""
    n = math.prod(jnp.shape(leaf))
    if bits == 0:
        return 0, 0, 0, n * jnp.dtype(jnp.result_type(leaf)).itemsize
    axis = leaf_axis(leaf, channel_axis)
    n_scales = 1 if axis is None else jnp.shape(leaf)[axis]
    zp = 0 if symmetric else n_scales  # one byte per zero point (b <= 8)
    return math.ceil(n * bits / 8), n_scales * scale_bytes, zp, 0


def quantized_size(
    params: PyTree,
    bits: Bits,
    *,
    symmetric: bool = True,
    channel_axis: int | None = None,
    quantizable: LeafSelector = None,
    scale_bytes: int = 4,
) -> SizeReport:
    """Bytes to store ``params`` quantized as by :func:`fake_quantize_tree`.

    Codes are bit-packed per leaf (``ceil(n · b / 8)`` bytes), each scale takes
    ``scale_bytes`` (4 = float32), each affine zero point one byte, and leaves kept in
    floating point their full ``n × itemsize``. Arguments as in :func:`fake_quantize_tree`.
    """
    check_bool("symmetric", symmetric)
    check_positive_int("scale_bytes", scale_bytes)
    widths = _resolve_bits(params, bits, quantizable, allow_traced=False)
    parts = [
        leaf_bytes(leaf, b, symmetric, channel_axis, scale_bytes)
        for leaf, b in zip(jax.tree.leaves(params), widths, strict=True)
    ]
    codes, scales, zps, floats = (sum(col) for col in zip(*parts, strict=True))
    return SizeReport(codes + scales + zps + floats, codes, scales, zps, floats)
