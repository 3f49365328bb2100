"""The z-loss: keep the log-partition function of the softmax near zero."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import as_float_array, check_reduction, normalize_axis, reduce, reduction_scale
from .functional import logsumexp, shifted_rows, softmax

__all__ = ["z_loss", "z_loss_grad"]


def _z_loss_inputs(logits: ArrayLike, axis: int, reduction: str) -> tuple[NDArray, int, np.dtype]:
    z, dtype = as_float_array(logits, "logits")
    ax = normalize_axis(axis, z.ndim)
    check_reduction(reduction)
    if z.shape[ax] == 0:
        raise ValueError(f"logits has an empty class axis (axis={axis}, shape {z.shape})")
    return z, ax, dtype


def z_loss(logits: ArrayLike, *, axis: int = -1, reduction: str = "mean") -> NDArray:
    r"""The z-loss: the squared log-partition function of the softmax.

    Course: :prf:ref:`tg-prop-zloss` in :doc:`/book/part2/targets`.

    .. math::  \ell_n = \bigl(\operatorname{LSE}(z_n)\bigr)^2 = (\log Z_n)^2

    Softmax is shift invariant, so cross-entropy leaves the overall level of
    the logits free to drift; this auxiliary loss, added with a small
    coefficient (:math:`10^{-4}` in PaLM), pins :math:`\log Z` near 0 so that
    the logits stay in a range where low-precision arithmetic is accurate.

    Parameters
    ----------
    logits : array_like, shape (..., C, ...)
        Unnormalised scores; the class axis is ``axis``.
    axis : int, default -1
        The class axis.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` averages the per-sample losses, ``"sum"`` adds them,
        ``"none"`` returns them.

    Returns
    -------
    ndarray
        Scalar, or per-sample losses for ``"none"``. A row with no finite
        maximum (all ``-inf``, a ``+inf`` or a NaN entry) has no softmax and
        gives NaN, as does its gradient. (PyTorch's ``logsumexp(z) ** 2`` gives
        ``inf`` for the first two; NaN marks that the row is not a distribution.)
    """
    z, ax, dtype = _z_loss_inputs(logits, axis, reduction)
    _, bad = shifted_rows(np.moveaxis(z, ax, -1))  # no distribution: NaN
    return reduce(np.where(bad, np.nan, logsumexp(z, axis=ax) ** 2), reduction, dtype)


def z_loss_grad(logits: ArrayLike, *, axis: int = -1, reduction: str = "mean") -> NDArray:
    r"""Gradient of :func:`z_loss` with respect to the logits.

    Course: :prf:ref:`tg-prop-zloss`, equation :eq:`tg-zloss-grad`, in :doc:`/book/part2/targets`.

    .. math::  \nabla_{z_n} \ell_n = 2 \operatorname{LSE}(z_n)\, \operatorname{softmax}(z_n)

    Parameters
    ----------
    logits, axis, reduction
        As for :func:`z_loss`.

    Returns
    -------
    ndarray
        Same shape and dtype as ``logits``.
    """
    z, ax, dtype = _z_loss_inputs(logits, axis, reduction)
    lse = logsumexp(z, axis=ax, keepdims=True)
    _, bad = shifted_rows(np.moveaxis(z, ax, -1))
    with np.errstate(invalid="ignore"):  # inf * 0 in a row that is NaN anyway
        grad = 2.0 * lse * softmax(z, axis=ax)
    grad = np.moveaxis(np.where(bad[..., None], np.nan, np.moveaxis(grad, ax, -1)), -1, ax)
    grad = grad * reduction_scale(reduction, lse.size)
    return grad.astype(dtype, copy=False)
