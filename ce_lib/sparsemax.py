"""Sparsemax and its loss: the Fenchel-Young sibling of softmax cross-entropy.

Softmax maps logits to the probability simplex with the entropy as a
regulariser; sparsemax uses the squared norm instead, which makes it the
Euclidean projection onto the simplex and lets it output exact zeros
(Martins & Astudillo, 2016). Both losses are Fenchel-Young losses
(Blondel, Martins & Niculae, 2020) with gradient ``prediction - target``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import (
    as_float_array,
    check_class_target,
    check_reduction,
    check_same_shape,
    normalize_axis,
    reduce,
    reduction_scale,
)
from .functional import shifted_rows

__all__ = ["sparsemax", "sparsemax_loss", "sparsemax_loss_grad"]


def sparsemax(x: ArrayLike, axis: int = -1) -> NDArray:
    r"""Sparsemax: the Euclidean projection of ``x`` onto the probability simplex.

    Course: equation :eq:`tg-sparsemax` and :prf:ref:`tg-thm-threshold`, equation :eq:`tg-threshold`, in
    :doc:`/book/part2/targets`.

    .. math::

        \operatorname{sparsemax}(z) = \arg\min_{p \in \Delta} \lVert p - z \rVert^2
        = \max(z - \tau(z), 0),

    where the threshold :math:`\tau` makes the result sum to one. With the
    entries sorted as :math:`z_{(1)} \ge z_{(2)} \ge \dots`, the support size
    is :math:`k = \max\{j : 1 + j z_{(j)} > \sum_{i \le j} z_{(i)}\}` and
    :math:`\tau = (\sum_{i \le k} z_{(i)} - 1)/k`.

    Parameters
    ----------
    x : array_like
        Logits. A ``-inf`` entry is outside the support (probability 0).
    axis : int, default -1
        The class axis.

    Returns
    -------
    ndarray
        Same shape and floating dtype as ``x``; non-negative, sums to one along
        ``axis``, and exactly zero for every class whose logit is at least 1
        below the largest. A slice with no finite maximum (all ``-inf``, or a
        ``+inf`` or NaN entry) is NaN, as a softmax of it is in PyTorch.
    """
    a, dtype = as_float_array(x, "x")
    ax = normalize_axis(axis, a.ndim)
    if a.shape[ax] == 0:
        raise ValueError(f"x has an empty class axis (axis={axis}, shape {a.shape})")
    z, bad = shifted_rows(np.moveaxis(a, ax, -1))  # max 0: shift invariant, and small sums
    tau, k = _threshold(z)
    p = np.maximum(z - tau, 0.0)
    # With one class in the support, tau = z_max - 1 and z_max - tau can round to
    # 1 - ulp; the exact answer is the one-hot vector of the arg max.
    p = np.where(k == 1, z == 0, p)
    p = np.where(bad[..., None], np.nan, p)
    return np.moveaxis(p, -1, ax).astype(dtype, copy=False)


def _threshold(z: NDArray) -> tuple[NDArray, NDArray]:
    """The sparsemax threshold tau(z) and the support size k over the last axis (kept)."""
    z_sorted = -np.sort(-z, axis=-1)  # descending
    cumulative = np.cumsum(z_sorted, axis=-1)
    j = np.arange(1, z.shape[-1] + 1)
    in_support = 1 + j * z_sorted > cumulative
    k = np.sum(in_support, axis=-1, keepdims=True)  # the condition holds exactly for j <= k
    return (np.take_along_axis(cumulative, k - 1, axis=-1) - 1) / k, k


def _sparsemax_terms(
    logits: ArrayLike, target: ArrayLike, axis: int, reduction: str
) -> tuple[NDArray, NDArray, NDArray, int, np.dtype]:
    """Logits and target distribution (class axis last), sparsemax, axis, dtype."""
    z, dtype = as_float_array(logits, "logits")
    ax = normalize_axis(axis, z.ndim)
    check_reduction(reduction)
    n_classes = z.shape[ax]
    if n_classes == 0:
        raise ValueError(f"logits has an empty class axis (axis={axis}, shape {z.shape})")
    t = np.asarray(target)
    if t.dtype.kind == "f" and t.ndim == z.ndim:
        check_same_shape(z, t, "logits", "target")
        y = np.moveaxis(t, ax, -1).astype(z.dtype)
        z = np.moveaxis(z, ax, -1)
    else:
        z = np.moveaxis(z, ax, -1)
        labels = check_class_target(t, z.shape[:-1], n_classes)
        y = (np.arange(n_classes) == labels[..., None]).astype(z.dtype)
    p = sparsemax(z, axis=-1)
    return z, y, p, ax, dtype


def sparsemax_loss(
    logits: ArrayLike, target: ArrayLike, *, axis: int = -1, reduction: str = "mean"
) -> NDArray:
    r"""The sparsemax loss (a Fenchel-Young loss with the squared-norm regulariser).

    Course: equation :eq:`tg-sparsemax-loss`, a Fenchel-Young loss (:prf:ref:`tg-def-fy`), in
    :doc:`/book/part2/targets`.

    With :math:`p = \operatorname{sparsemax}(z)` and a target distribution
    :math:`q` (the one-hot :math:`\mathbf{e}_y` for a class index :math:`y`),

    .. math::

        \ell(z, q) = \langle z, p - q \rangle - \tfrac12 \lVert p \rVert^2 + \tfrac12 \lVert q \rVert^2
                   \;\ge\; 0,

    which for :math:`q = \mathbf{e}_y` is Martins & Astudillo's
    :math:`-z_y + \tfrac12 \sum_{j \in S(z)} (z_j^2 - \tau^2) + \tfrac12`.
    It is zero exactly when :math:`p = q`; for a class index that means
    :math:`z_y \ge z_j + 1` for every :math:`j \ne y`: a separation margin of 1,
    like the hinge loss and unlike cross-entropy. It is computed from
    ``z - max(z)`` (the value does not change, as :math:`p` and :math:`q` both
    sum to 1), so a common offset of the logits costs no accuracy. A ``-inf``
    logit has :math:`p_j = 0` and adds 0 where :math:`q_j = 0`, ``+inf`` where
    :math:`q_j > 0`; a row with no finite maximum is NaN (see :func:`sparsemax`).

    Parameters
    ----------
    logits : array_like, shape (..., C, ...)
        Scores; the class axis is ``axis``.
    target : array_like
        Integer class indices (shape of ``logits`` without the class axis) or
        a distribution of the same shape as ``logits``.
    axis : int, default -1
        The class axis.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` averages the per-sample losses, ``"sum"`` adds them,
        ``"none"`` returns them.

    Returns
    -------
    ndarray
        Scalar, or per-sample losses for ``"none"``.
    """
    z, y, p, _, dtype = _sparsemax_terms(logits, target, axis, reduction)
    z, _ = shifted_rows(z)  # <z, p - q> does not change: p and q both sum to 1
    with np.errstate(invalid="ignore"):  # a -inf class with p = q = 0 adds 0; with q > 0, +inf
        inner = np.where(p == y, 0.0, z * (p - y))
    per_sample = np.sum(inner, axis=-1) - 0.5 * np.sum(p**2, axis=-1) + 0.5 * np.sum(y**2, axis=-1)
    return reduce(per_sample, reduction, dtype)


def sparsemax_loss_grad(
    logits: ArrayLike, target: ArrayLike, *, axis: int = -1, reduction: str = "mean"
) -> NDArray:
    r"""Gradient of :func:`sparsemax_loss` with respect to the logits.

    Course: part 3 of :prf:ref:`tg-thm-fy` with equation :eq:`tg-sparsemax-loss` in
    :doc:`/book/part2/targets`.

    .. math::  \nabla_z \ell = \operatorname{sparsemax}(z) - q,

    the same "prediction minus target" form as softmax cross-entropy; every
    class outside the support with :math:`q_j = 0` gets exactly zero gradient.

    Parameters
    ----------
    logits, target, axis, reduction
        As for :func:`sparsemax_loss`.

    Returns
    -------
    ndarray
        Same shape and dtype as ``logits``.
    """
    z, y, p, ax, dtype = _sparsemax_terms(logits, target, axis, reduction)
    grad = (p - y) * reduction_scale(reduction, int(np.prod(z.shape[:-1])))
    return np.moveaxis(grad, -1, ax).astype(dtype, copy=False)
