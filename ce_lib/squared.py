"""Mean squared error (PyTorch's ``mse_loss``) and its gradient."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import as_float_array, check_reduction, check_same_shape, reduce, reduction_scale

__all__ = ["mse_loss", "mse_loss_grad"]


def _mse_inputs(pred: ArrayLike, target: ArrayLike, reduction: str) -> tuple[NDArray, NDArray, np.dtype]:
    a, dtype = as_float_array(pred, "pred")
    t, _ = as_float_array(target, "target")
    check_same_shape(a, t, "pred", "target")
    check_reduction(reduction)
    return a, t.astype(a.dtype, copy=False), dtype


def mse_loss(pred: ArrayLike, target: ArrayLike, *, reduction: str = "mean") -> NDArray:
    r"""Mean squared error.

    Course: :prf:ref:`mse-def-unit` and :prf:ref:`mse-rem-half` in :doc:`/book/part1/mse_vs_ce`.

    .. math::  \ell_n = (a_n - y_n)^2

    (PyTorch's convention: no factor 1/2.)

    Parameters
    ----------
    pred : array_like
        Predictions :math:`a_n`.
    target : array_like
        Targets :math:`y_n`, same shape as ``pred`` (no broadcasting).
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` averages the per-element losses, ``"sum"`` adds them,
        ``"none"`` returns them.

    Returns
    -------
    ndarray
        Scalar, or per-element losses for ``"none"``.
    """
    a, t, dtype = _mse_inputs(pred, target, reduction)
    return reduce((a - t) ** 2, reduction, dtype)


def mse_loss_grad(pred: ArrayLike, target: ArrayLike, *, reduction: str = "mean") -> NDArray:
    r"""Gradient of :func:`mse_loss` with respect to ``pred``.

    Course: the factor :math:`\partial \ell/\partial a = 2(a - y)` in the proof of
    :prf:ref:`mse-thm-grad-mse` (and :math:`2(p - q)` in that of :prf:ref:`mse-thm-softmax-mse`),
    in :doc:`/book/part1/mse_vs_ce`; the chapter multiplies it by :math:`\sigma'(z)`, or by the
    softmax Jacobian, to get :eq:`mse-grad-mse` and :eq:`mse-softmax-grad`.

    .. math::  \frac{\partial \ell_n}{\partial a_n} = 2 (a_n - y_n)

    Parameters
    ----------
    pred, target, reduction
        As for :func:`mse_loss`.

    Returns
    -------
    ndarray
        Same shape and dtype as ``pred``.
    """
    a, t, dtype = _mse_inputs(pred, target, reduction)
    return (2.0 * (a - t) * reduction_scale(reduction, a.size)).astype(dtype, copy=False)
