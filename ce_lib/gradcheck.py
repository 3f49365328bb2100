"""Finite-difference gradients, for checking the closed forms.

In the spirit of the CS231n notes on gradient checking: compare an analytic
gradient with centred differences, using a *relative* error so that the
verdict does not depend on the scale of the function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["GradcheckResult", "gradcheck", "numerical_gradient", "relative_error"]


def numerical_gradient(
    f: Callable[[NDArray[np.float64]], float], x: ArrayLike, eps: float = 1e-6
) -> NDArray[np.float64]:
    r"""Centred finite-difference gradient of a scalar function.

    Course: a checking tool, not a formula of the course; used in :doc:`/book/part1/softmax` to check
    :eq:`sm-beta-derivative` and :eq:`sm-jacobian`, and in the later chapters.

    .. math::

        \frac{\partial f}{\partial x_i} \approx
        \frac{f(x + \varepsilon e_i) - f(x - \varepsilon e_i)}{2 \varepsilon},

    whose error is :math:`O(\varepsilon^2)` for a smooth :math:`f` (the
    one-sided difference is only :math:`O(\varepsilon)`).

    Parameters
    ----------
    f : callable
        Takes an array shaped like ``x`` and returns a scalar.
    x : array_like
        Point at which to differentiate. It is copied to float64 and never
        modified; ``f`` receives the perturbed copy.
    eps : float, default 1e-6
        Step. About ``1e-6`` balances truncation error against rounding error
        in float64; float32 arithmetic inside ``f`` needs ``1e-3`` or so.

    Returns
    -------
    ndarray of float64
        Same shape as ``x``.
    """
    if not eps > 0:
        raise ValueError(f"eps must be positive; got {eps!r}")
    point = np.array(x, dtype=np.float64)  # a private copy, perturbed in place
    grad = np.zeros_like(point)
    for i in np.ndindex(point.shape):
        saved = point[i]
        point[i] = saved + eps
        f_plus = float(f(point))
        point[i] = saved - eps
        f_minus = float(f(point))
        point[i] = saved
        grad[i] = (f_plus - f_minus) / (2.0 * eps)
    return grad


def relative_error(a: ArrayLike, b: ArrayLike) -> float:
    r"""Relative error between two arrays, as a single number.

    Course: a checking tool, not a formula of the course; used in every chapter, first in
    :doc:`/book/part1/softmax` to check :eq:`sm-jacobian`.

    .. math::

        \frac{\lVert a - b \rVert}{\max(\lVert a \rVert + \lVert b \rVert, 10^{-300})}

    It is 0 for identical arrays, about :math:`10^{-8}` or less for a correct
    float64 gradient checked with centred differences, and of order 1 for a
    wrong one. Computed over the whole array (Frobenius norms), so entries
    that should be zero do not blow it up.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))


@dataclass(frozen=True)
class GradcheckResult:
    """The outcome of :func:`gradcheck`.

    Course: a checking tool, not a formula of the course; returned by :func:`gradcheck`, first used in
    :doc:`/book/part1/softmax` to check :prf:ref:`sm-thm-grad-lse`.
    """

    relative_error: float
    """:func:`relative_error` between the analytic and numerical gradients."""
    max_abs_error: float
    """Largest entrywise absolute difference."""
    tolerance: float
    """The relative error at or below which the check passes."""

    @property
    def passed(self) -> bool:
        return self.relative_error <= self.tolerance

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"gradcheck {verdict}: relative error {self.relative_error:.2e} "
            f"(tolerance {self.tolerance:.0e}), max abs error {self.max_abs_error:.2e}"
        )


def gradcheck(
    f: Callable[[NDArray[np.float64]], float],
    x: ArrayLike,
    analytic: ArrayLike | Callable[[NDArray[np.float64]], ArrayLike],
    *,
    eps: float = 1e-6,
    tolerance: float = 1e-6,
) -> GradcheckResult:
    """Compare an analytic gradient with :func:`numerical_gradient`.

    Course: a checking tool, not a formula of the course; first used in :doc:`/book/part1/softmax` to
    check :prf:ref:`sm-thm-grad-lse`, and in the later chapters.

    Parameters
    ----------
    f : callable
        Scalar function of an array shaped like ``x``.
    x : array_like
        Point at which to check.
    analytic : array_like or callable
        The claimed gradient at ``x``, or a function that computes it from ``x``.
    eps : float, default 1e-6
        Finite-difference step.
    tolerance : float, default 1e-6
        Largest acceptable :func:`relative_error`. With ``eps=1e-6`` a correct
        float64 gradient of a smooth function is typically near ``1e-9``; a
        kink (ReLU, hinge) within ``eps`` of ``x`` can spoil the check
        legitimately, as the CS231n notes warn.

    Returns
    -------
    GradcheckResult
        Truthy when the check passed; prints as a one-line verdict.
    """
    x64 = np.array(x, dtype=np.float64)
    claimed = analytic(x64.copy()) if callable(analytic) else analytic
    claimed = np.asarray(claimed, dtype=np.float64)
    numeric = numerical_gradient(f, x64, eps=eps)
    if claimed.shape != numeric.shape:
        raise ValueError(f"analytic gradient has shape {claimed.shape}; x has shape {numeric.shape}")
    return GradcheckResult(
        relative_error=relative_error(claimed, numeric),
        max_abs_error=float(np.max(np.abs(claimed - numeric), initial=0.0)),
        tolerance=tolerance,
    )
