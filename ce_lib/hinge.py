"""Margin losses: the multi-class SVM, and the hinge -> log-sum-exp -> softmax chain.

Chapter 5 of the course walks this module: :func:`hinge_loss` (the target must
beat the best other class), :func:`lse_hinge_loss` (the inner max smoothed by
log-sum-exp) and, with the outer max smoothed by softplus, cross-entropy.
:func:`multi_margin_loss` is PyTorch's Weston-Watkins SVM loss.

All three see only differences of logits, and compute them from ``z - max(z)``
(row by row), so a common offset of the logits never costs accuracy. Non-finite
logits, the same for every function here: a ``-inf`` competitor is absent (it
adds nothing), a ``-inf`` target makes the loss ``+inf`` (the gradient stays
finite for :func:`hinge_loss`, :func:`lse_hinge_loss` and :func:`multi_margin_loss`
with ``p=1``; with ``p=2`` it is ``-inf`` at the target and ``+inf`` at the other
finite classes, as in PyTorch), and a row with no finite maximum (all ``-inf``,
a ``+inf`` or a NaN entry) has NaN loss and gradient.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import (
    as_float_array,
    check_class_target,
    check_class_weight,
    check_reduction,
    normalize_axis,
    reduce,
    reduction_scale,
)
from .functional import logsumexp, shifted_rows, softmax, times_or_zero

__all__ = [
    "hinge_loss",
    "hinge_loss_grad",
    "lse_hinge_loss",
    "lse_hinge_loss_grad",
    "multi_margin_loss",
    "multi_margin_loss_grad",
]


def _class_inputs(
    logits: ArrayLike, target: ArrayLike, axis: int, reduction: str
) -> tuple[NDArray, NDArray, NDArray, int, np.dtype]:
    """Logits with the class axis last, integer labels, and their one-hot mask."""
    z, dtype = as_float_array(logits, "logits")
    ax = normalize_axis(axis, z.ndim)
    check_reduction(reduction)
    n_classes = z.shape[ax]
    if n_classes == 0:
        raise ValueError(f"logits has an empty class axis (axis={axis}, shape {z.shape})")
    z = np.moveaxis(z, ax, -1)
    y = check_class_target(target, z.shape[:-1], n_classes)
    onehot = np.arange(n_classes) == y[..., None]
    return z, y, onehot, ax, dtype


def _nan_rows(g: NDArray, bad: NDArray) -> NDArray:
    """``g`` (class axis last) with the rows marked in ``bad`` set to NaN."""
    return np.where(bad[..., None], np.nan, g)


def _target_logit(z: NDArray, y: NDArray) -> NDArray:
    """:math:`z_y` for every row, shape of ``y``."""
    return np.take_along_axis(z, y[..., None], axis=-1)[..., 0]


def _check_margin(margin: float) -> float:
    if not np.isfinite(margin):
        raise ValueError(f"margin must be a finite number; got {margin!r}")
    return float(margin)


def _multi_margin_terms(
    logits: ArrayLike,
    target: ArrayLike,
    p: int,
    margin: float,
    weight: ArrayLike | None,
    reduction: str,
    axis: int,
) -> tuple[NDArray, NDArray, int, np.dtype, NDArray, NDArray]:
    """Logits (class axis last), one-hot mask, axis, dtype, hinges h_ni and w_y."""
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2; got {p!r}")
    margin = _check_margin(margin)
    z, y, onehot, ax, dtype = _class_inputs(logits, target, axis, reduction)
    w = check_class_weight(weight, z.shape[-1], z.dtype)
    w_y = np.ones(y.shape, dtype=z.dtype) if w is None else w[y]
    z, bad = shifted_rows(z)
    with np.errstate(invalid="ignore"):  # -inf - (-inf): a -inf competitor of a -inf target
        hinge = np.maximum((z - _target_logit(z, y)[..., None]) + margin, 0.0)
    # The sum runs over i != y; a competitor at -inf is absent and adds 0.
    hinge[onehot | (z == -np.inf)] = 0.0
    return z, onehot, ax, dtype, _nan_rows(hinge, bad), w_y


def multi_margin_loss(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    p: int = 1,
    margin: float = 1.0,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
    axis: int = -1,
) -> NDArray:
    r"""Multi-class hinge loss (the Weston-Watkins / CS231n SVM loss), as in PyTorch.

    Course: equation :eq:`hs-svm` in :doc:`/book/part1/hinge_to_softmax`.

    .. math::

        \ell_n = \frac{1}{C} \sum_{i \ne y_n} w_{y_n}
                 \max(0,\; \Delta - z_{n y_n} + z_{ni})^p,

    with margin :math:`\Delta` and :math:`p \in \{1, 2\}`.

    Parameters
    ----------
    logits : array_like, shape (..., C, ...)
        Unnormalised scores; the class axis is ``axis``.
    target : array_like of int
        Class indices, shape of ``logits`` without the class axis.
    p : {1, 2}, default 1
        Power of each hinge term (2 is the squared hinge).
    margin : float, default 1.0
        :math:`\Delta`, the lead the target must have over every other class.
    weight : array_like of shape (C,), optional
        Weight :math:`w_{y}` of the sample's own class.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` averages over the samples (not weight-normalised, as in PyTorch).
    axis : int, default -1
        The class axis.

    Returns
    -------
    ndarray
        Scalar, or per-sample losses for ``"none"``.

    Notes
    -----
    Where this differs from ``torch.nn.functional.multi_margin_loss`` on purpose
    (see the module notes): a row with a NaN, a ``+inf``, or only ``-inf`` logits
    is NaN (PyTorch: a NaN term fails its comparison and is dropped, so the row
    gets the loss of its other terms, 0 for a NaN target; a ``+inf`` competitor
    gives ``inf``; a ``+inf`` target or an all ``-inf`` row gives 0); ``"mean"`` of
    an empty batch is NaN, 0/0; a class of weight 0 adds 0 even where its hinge
    is infinite (PyTorch: NaN). Logits of size ``1e15`` keep the accuracy of
    their differences, which PyTorch's ``margin - z_y + z_i`` loses.
    """
    z, _, _, dtype, hinge, w_y = _multi_margin_terms(logits, target, p, margin, weight, reduction, axis)
    per_sample = times_or_zero(w_y, np.sum(hinge**p, axis=-1)) / z.shape[-1]
    return reduce(per_sample, reduction, dtype)


def multi_margin_loss_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    p: int = 1,
    margin: float = 1.0,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
    axis: int = -1,
) -> NDArray:
    r"""Gradient of :func:`multi_margin_loss` with respect to the logits.

    Course: the gradient of equation :eq:`hs-svm` in :doc:`/book/part1/hinge_to_softmax` (the chapter
    states the loss, not this gradient).

    With :math:`h_{ni} = \max(0, \Delta - z_{ny_n} + z_{ni})` for :math:`i \ne y_n`,

    .. math::

        \frac{\partial \ell_n}{\partial z_{ni}} = \frac{w_{y_n}}{C}\, p\, h_{ni}^{p-1} [h_{ni} > 0],
        \qquad
        \frac{\partial \ell_n}{\partial z_{ny_n}}
        = -\sum_{i \ne y_n} \frac{\partial \ell_n}{\partial z_{ni}} .

    At a kink (:math:`h = 0` exactly) the subgradient 0 is used, as in PyTorch.

    Parameters
    ----------
    logits, target, p, margin, weight, reduction, axis
        As for :func:`multi_margin_loss`.

    Returns
    -------
    ndarray
        Same shape and dtype as ``logits``.
    """
    z, onehot, ax, dtype, hinge, w_y = _multi_margin_terms(logits, target, p, margin, weight, reduction, axis)
    active = hinge > 0
    g = times_or_zero(w_y[..., None], np.where(active, p * hinge ** (p - 1), 0.0)) / z.shape[-1]
    g = np.where(onehot, -g.sum(axis=-1, keepdims=True), g)  # g is 0 at the target before this
    g = _nan_rows(g, np.isnan(hinge).any(axis=-1))
    g = g * reduction_scale(reduction, w_y.size)
    return np.moveaxis(g, -1, ax).astype(dtype, copy=False)


def _others(z: NDArray, onehot: NDArray) -> NDArray:
    """The logits with the target class replaced by ``-inf``: the set :math:`i \\ne y`."""
    return np.where(onehot, -np.inf, z)


def hinge_loss(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    margin: float = 0.0,
    reduction: str = "mean",
    axis: int = -1,
) -> NDArray:
    r"""The "hard" multi-class hinge: the target must beat the best other class.

    Course: :prf:ref:`hs-def-hinge`, equation :eq:`hs-hinge`, in :doc:`/book/part1/hinge_to_softmax`.

    .. math::

        \ell_n = \max\Bigl(\max_{i \ne y_n} z_{ni} - z_{ny_n} + m,\; 0\Bigr).

    This is the objective that chapter 5 of the course smooths, first with
    log-sum-exp (:func:`lse_hinge_loss`) and then with softplus, to arrive
    at :func:`~ce_lib.categorical.cross_entropy`. With one class there is no competitor and the
    loss is 0.

    Parameters
    ----------
    logits : array_like, shape (..., C, ...)
        Unnormalised scores; the class axis is ``axis``.
    target : array_like of int
        Class indices, shape of ``logits`` without the class axis.
    margin : float, default 0.0
        :math:`m`, how far the target must lead.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` averages the per-sample losses, ``"sum"`` adds them,
        ``"none"`` returns them.
    axis : int, default -1
        The class axis.

    Returns
    -------
    ndarray
        Scalar, or per-sample losses for ``"none"``.
    """
    margin = _check_margin(margin)
    z, y, onehot, _, dtype = _class_inputs(logits, target, axis, reduction)
    z, _ = shifted_rows(z)
    gap = (np.max(_others(z, onehot), axis=-1) - _target_logit(z, y)) + margin
    return reduce(np.maximum(gap, 0.0), reduction, dtype)


def hinge_loss_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    margin: float = 0.0,
    reduction: str = "mean",
    axis: int = -1,
) -> NDArray:
    r"""Gradient of :func:`hinge_loss` with respect to the logits.

    Course: equation :eq:`hs-hinge-grad` in :doc:`/book/part1/hinge_to_softmax`.

    Where the loss is positive, :math:`+1` at the strongest other class
    :math:`k = \arg\max_{i \ne y} z_i` and :math:`-1` at the target; zero
    elsewhere. So at most **two** classes per sample receive a gradient. At
    ties the first maximiser is used (a valid subgradient).

    Parameters
    ----------
    logits, target, margin, reduction, axis
        As for :func:`hinge_loss`.

    Returns
    -------
    ndarray
        Same shape and dtype as ``logits``.
    """
    margin = _check_margin(margin)
    z, y, onehot, ax, dtype = _class_inputs(logits, target, axis, reduction)
    k = np.argmax(_others(z, onehot), axis=-1)  # before the shift, which can round two apart into a tie
    z, bad = shifted_rows(z)
    active = ((np.max(_others(z, onehot), axis=-1) - _target_logit(z, y)) + margin) > 0
    strongest = np.arange(z.shape[-1]) == k[..., None]
    g = _nan_rows((strongest.astype(z.dtype) - onehot) * active[..., None], bad)
    g = g * reduction_scale(reduction, y.size)
    return np.moveaxis(g, -1, ax).astype(dtype, copy=False)


def lse_hinge_loss(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    margin: float = 0.0,
    reduction: str = "mean",
    axis: int = -1,
) -> NDArray:
    r"""The hinge with its inner max smoothed by log-sum-exp.

    Course: :prf:ref:`hs-def-lse-hinge`, equation :eq:`hs-lse-hinge`, in
    :doc:`/book/part1/hinge_to_softmax`.

    .. math::

        \ell_n = \max\Bigl(\log \sum_{i \ne y_n} e^{z_{ni}} - z_{ny_n} + m,\; 0\Bigr).

    Replacing the outer :math:`\max(\cdot, 0)` by softplus (with :math:`m = 0`)
    gives exactly :func:`~ce_lib.categorical.cross_entropy`:
    :math:`\operatorname{softplus}(\operatorname{LSE}_{i\ne y} z_i - z_y)
    = -\log \operatorname{softmax}(z)_y`.

    Parameters
    ----------
    logits : array_like, shape (..., C, ...)
        Unnormalised scores; the class axis is ``axis``.
    target : array_like of int
        Class indices, shape of ``logits`` without the class axis.
    margin : float, default 0.0
        :math:`m`, how far the target must lead.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` averages the per-sample losses, ``"sum"`` adds them,
        ``"none"`` returns them.
    axis : int, default -1
        The class axis.

    Returns
    -------
    ndarray
        Scalar, or per-sample losses for ``"none"``.
    """
    margin = _check_margin(margin)
    z, y, onehot, _, dtype = _class_inputs(logits, target, axis, reduction)
    z, _ = shifted_rows(z)
    gap = (logsumexp(_others(z, onehot), axis=-1) - _target_logit(z, y)) + margin
    return reduce(np.maximum(gap, 0.0), reduction, dtype)


def lse_hinge_loss_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    margin: float = 0.0,
    reduction: str = "mean",
    axis: int = -1,
) -> NDArray:
    r"""Gradient of :func:`lse_hinge_loss` with respect to the logits.

    Course: equation :eq:`hs-lse-hinge-grad` in :doc:`/book/part1/hinge_to_softmax`.

    Where the loss is positive, the gradient is the softmax over the *other*
    classes, :math:`e^{z_i} / \sum_{k \ne y} e^{z_k}` for :math:`i \ne y`, and
    :math:`-1` at the target; zero where the loss is 0. Every non-target class
    now receives a gradient, in proportion to how threatening it is.

    Parameters
    ----------
    logits, target, margin, reduction, axis
        As for :func:`lse_hinge_loss`.

    Returns
    -------
    ndarray
        Same shape and dtype as ``logits``.
    """
    margin = _check_margin(margin)
    z, y, onehot, ax, dtype = _class_inputs(logits, target, axis, reduction)
    z, bad = shifted_rows(z)
    others = _others(z, onehot)
    active = ((logsumexp(others, axis=-1) - _target_logit(z, y)) + margin) > 0
    # Where the loss is 0 the gradient is 0, also where every other class is -inf (or there is
    # none), whose softmax over the others does not exist.
    g = np.where(active[..., None], softmax(others, axis=-1) - onehot, 0.0)
    g = _nan_rows(g, bad) * reduction_scale(reduction, y.size)
    return np.moveaxis(g, -1, ax).astype(dtype, copy=False)
