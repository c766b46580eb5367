"""Hessian spectrum diagnostics: extreme eigenpairs, traces and spectral densities.

Every function here takes a loss and a point ``params`` (any pytree of float arrays) and
touches the Hessian only through Hessian-vector products (HVPs), so it scales to networks
whose Hessian could never be stored. The loss is either

* ``loss_fn(params) -> scalar`` (``batches=None``): the gradient is linearized once
  (:func:`jopt.calculus.hvp_fn`) and each further product costs about one gradient; or
* ``loss_fn(params, batch) -> scalar`` with ``batches`` a pytree whose leaves share a
  leading batch axis of length ``B``: every product is the average
  ``(1/B) Σ_b ∇²loss_fn(params, batch_b) v``, one forward-over-reverse HVP per batch in a
  ``lax.scan`` (memory of one batch). For per-batch means over equal-sized batches this
  is exactly the Hessian of the full-data loss.

All iterations are compiled ``lax`` loops; results are ``NamedTuple``s of arrays that
report their cost in ``num_hvps`` — products with the (batch-averaged) Hessian, each one
sweep over all ``B`` batches. Results keep the parameters' dtype. The functions are
jit-compiled internally (the loss and every integer option are static; a new ``loss_fn``
object compiles anew) and can be called inside ``jax.jit``.

References:
  Lanczos, C. (1950). An iteration method for the solution of the eigenvalue problem of
  linear differential and integral operators. J. Res. Nat. Bur. Standards 45.
  Golub, G. H. & Van Loan, C. F. (2013). Matrix Computations, 4th ed., §10.1 (Lanczos,
  Ritz pairs and their residuals, §10.1.4), §10.3.1 (full re-orthogonalisation).
  Parlett, B. N. (1998). The Symmetric Eigenvalue Problem, SIAM, §13.2 (restarting an
  exhausted Krylov space), Thm. 4.5.1 (a Ritz value lies within its residual norm of an
  eigenvalue).
  Hutchinson, M. F. (1989). A stochastic estimator of the trace of the influence matrix
  for Laplacian smoothing splines. Comm. Statist. Simul. Comput. 18(3).
  Avron, H. & Toledo, S. (2011). Randomized algorithms for estimating the trace of an
  implicit symmetric positive semi-definite matrix. J. ACM 58(2) (estimator variance).
  Chan, T. F., Golub, G. H. & LeVeque, R. J. (1983). Algorithms for computing the sample
  variance. Amer. Statist. 37(3) (pairwise/Welford merging of running moments).
  Golub, G. H. & Welsch, J. H. (1969). Calculation of Gauss quadrature rules. Math. Comp.
  23 (nodes and weights from the Jacobi matrix).
  Lin, L., Saad, Y. & Yang, C. (2016). Approximating spectral densities of large
  matrices. SIAM Review 58(1), §3.2 (stochastic Lanczos quadrature, eq. 3.13-3.16).
  Ghorbani, B., Krishnan, S. & Xiao, Y. (2019). An investigation into neural net
  optimization via Hessian eigenvalue density. ICML, §2 and Appendix A.
  Yao, Z., Gholami, A., Keutzer, K. & Mahoney, M. W. (2020). PyHessian: Neural networks
  through the lens of the Hessian. IEEE BigData (top eigenvalues, trace, density).
"""

from jopt.diagnostics.common import HessianEigResult, HessianTraceResult, SpectralDensityResult
from jopt.diagnostics.density import hessian_spectral_density, plot_spectral_density
from jopt.diagnostics.eigs import hessian_eigs
from jopt.diagnostics.trace import hessian_trace

__all__ = [
    "HessianEigResult",
    "HessianTraceResult",
    "SpectralDensityResult",
    "hessian_eigs",
    "hessian_spectral_density",
    "hessian_trace",
    "plot_spectral_density",
]
