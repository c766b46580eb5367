"""Nonlinear least squares and curve fitting: :func:`least_squares` (Levenberg–Marquardt,
dogleg, Gauss–Newton; robust losses) and :func:`curve_fit` (scipy's meaning, with the
parameters' covariance)."""

from jopt.lsq.fit import covariance, curve_fit
from jopt.lsq.many import curve_fit_many, least_squares_many
from jopt.lsq.solve import LeastSquaresResult, LeastSquaresStatus, least_squares

__all__ = ["LeastSquaresResult", "LeastSquaresStatus", "covariance", "curve_fit",
           "curve_fit_many", "least_squares", "least_squares_many"]
