"""Model compression built on jopt's calculus: pruning, quantization, distillation.

* :mod:`jopt.compress.prune` — magnitude, first-order Taylor and Optimal Brain Damage
  scores (curvature from exact or Hutchinson Hessian / Gauss-Newton diagonals), exact-
  sparsity masks, :func:`keep_pruned` for masked fine-tuning, Zhu & Gupta's gradual schedule.
* :mod:`jopt.compress.quantize` — symmetric / affine uniform quantization at 2-8 bits, per
  tensor or per channel; straight-through fake quantization; size reports in bytes.
* :mod:`jopt.compress.mixed_precision` — HAWQ-V2 mixed precision: per-leaf Hessian traces
  and one bit width per leaf under a size budget (exact dynamic programming).
* :mod:`jopt.compress.distill` — Hinton et al.'s temperature-scaled distillation loss and
  a train step for any optax / jopt transform.
"""

from jopt.compress.distill import distillation_loss, distillation_step
from jopt.compress.mixed_precision import (
    BitAllocation,
    allocate_bits,
    hawq_sensitivities,
    hessian_traces,
    min_cost_assignment,
)
from jopt.compress.prune import (
    GradualPruningState,
    apply_mask,
    compute_mask,
    gauss_newton_diag,
    gradual_pruning,
    hessian_diag,
    keep_pruned,
    magnitude_scores,
    mask_sparsity,
    obd_scores,
    polynomial_sparsity_schedule,
    prune,
    taylor_scores,
    weight_matrices,
)
from jopt.compress.quantize import (
    SizeReport,
    dequantize,
    fake_quantize,
    fake_quantize_tree,
    quantization_error,
    quantize,
    quantized_size,
)

__all__ = [
    "BitAllocation",
    "GradualPruningState",
    "SizeReport",
    "allocate_bits",
    "apply_mask",
    "compute_mask",
    "dequantize",
    "distillation_loss",
    "distillation_step",
    "fake_quantize",
    "fake_quantize_tree",
    "gauss_newton_diag",
    "gradual_pruning",
    "hawq_sensitivities",
    "hessian_diag",
    "hessian_traces",
    "keep_pruned",
    "magnitude_scores",
    "mask_sparsity",
    "min_cost_assignment",
    "obd_scores",
    "polynomial_sparsity_schedule",
    "prune",
    "quantization_error",
    "quantize",
    "quantized_size",
    "taylor_scores",
    "weight_matrices",
]
