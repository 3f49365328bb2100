"""Softmax (categorical) cross-entropy and its closed-form gradient.

The readable reference: every variant (class indices or probabilities, class
weights, label smoothing, ignored targets) is one formula, ``-sum_c q_c log p_c``,
with a coefficient array ``q`` built from the target; the gradient is
``(sum_c q_c) p - q``. The common case (integer labels, no weights, no
smoothing) goes through the one-pass fast path of ``ce_lib._fastpath``.

Conventions follow ``torch.nn.functional`` (argument names, ``reduction``
rules, ``ignore_index=-100``, the weighting and label-smoothing formulas),
except that the class axis is chosen with ``axis=`` (default ``-1``, the
NumPy convention); ``axis=1`` reproduces PyTorch's ``(N, C, d1, ...)`` layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._fastpath import fast_cross_entropy
from ._validation import (
    as_float_array,
    check_class_target,
    check_class_weight,
    check_reduction,
    check_same_shape,
    normalize_axis,
    reduce,
    reduction_scale,
)
from .functional import log_softmax, shift_by_max, softmax, sum_of_others, times_or_zero

__all__ = ["cross_entropy", "cross_entropy_grad", "cross_entropy_value_and_grad"]


@dataclass
class _CrossEntropyTerms:
    """Everything the loss and its gradient share, in class-axis-last layout.

    Every variant of cross-entropy (class indices or probabilities, class
    weights, label smoothing, ignored targets) is the same formula

    .. math::  \\ell_n = -\\sum_c q_{nc} \\log p_{nc}

    with a coefficient array ``q`` built from the target; its gradient with
    respect to the logits is ``(sum_c q_nc) p_n - q_n``.
    """

    z: NDArray  # logits minus their row maximum, class axis last
    q: NDArray  # coefficients of -log p, same shape as z
    keep: NDArray  # rows whose target is not ignored (all, for probability targets)
    denominator: float  # what "mean" divides the summed loss by
    axis: int  # where the class axis was in the caller's layout
    dtype: np.dtype


def _cross_entropy_terms(
    logits: ArrayLike,
    target: ArrayLike,
    axis: int,
    weight: ArrayLike | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
) -> _CrossEntropyTerms:
    z, dtype = as_float_array(logits, "logits")
    ax = normalize_axis(axis, z.ndim)
    check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1]; got {label_smoothing!r}")
    n_classes = z.shape[ax]
    if n_classes == 0:
        raise ValueError(f"logits has an empty class axis (axis={axis}, shape {z.shape})")
    w = check_class_weight(weight, n_classes, z.dtype)
    eps = float(label_smoothing)

    t = np.asarray(target)
    if t.dtype.kind == "f" and t.ndim == z.ndim:
        # Probability targets, same shape as the logits:
        #   q = w * ((1 - eps) t + eps / C),  mean divides by the number of rows.
        check_same_shape(z, t, "logits", "target")
        z = shift_by_max(np.moveaxis(z, ax, -1), -1)[0]  # shift invariance: the row max first
        t = np.moveaxis(t, ax, -1).astype(z.dtype, copy=False)
        q = (1.0 - eps) * t + eps / n_classes
        if w is not None:
            q = q * w
        keep = np.ones(z.shape[:-1], dtype=bool)
        return _CrossEntropyTerms(z, q, keep, float(np.prod(z.shape[:-1])), ax, dtype)

    # Class-index targets, shape of the logits without the class axis:
    z = shift_by_max(np.moveaxis(z, ax, -1), -1)[0]  # shift invariance: the row max first
    #   q = m * ((1 - eps) w_y e_y + (eps / C) w),  m = [y != ignore_index],
    #   mean divides by sum_n m_n w_{y_n}.
    y = check_class_target(t, z.shape[:-1], n_classes, ignore_index)
    keep = y != ignore_index
    y_safe = np.where(keep, y, 0)[..., None]
    w_full = np.ones(n_classes, dtype=z.dtype) if w is None else w
    w_y = np.where(keep, w_full[y_safe[..., 0]], 0.0).astype(z.dtype)
    q = np.broadcast_to((eps / n_classes) * w_full, z.shape) * keep[..., None]
    q = q.astype(z.dtype)  # a fresh array we may write into
    np.put_along_axis(q, y_safe, np.take_along_axis(q, y_safe, -1) + (1.0 - eps) * w_y[..., None], -1)
    return _CrossEntropyTerms(z, q, keep, float(w_y.sum()), ax, dtype)


def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> NDArray:
    r"""Softmax cross-entropy between logits and a target.

    Course: :prf:ref:`ce-def-cross-entropy`, equations :eq:`ce-eq-soft-loss` and :eq:`ce-eq-onehot-loss`,
    in :doc:`/book/part1/cross_entropy`; label smoothing :eq:`tg-ls-loss` in :doc:`/book/part2/targets`.

    With :math:`p = \operatorname{softmax}(z)` along ``axis``, each element's loss is

    .. math::

        \ell_n = -\sum_c q_{nc} \log p_{nc}, \qquad
        q_{nc} = w_c \bigl((1-\varepsilon)\, t_{nc} + \varepsilon / C\bigr),

    where :math:`t_n` is the one-hot vector of the label :math:`y_n` (class
    indices) or the given distribution (probability targets), :math:`w` the
    class weights and :math:`\varepsilon` the label smoothing. For a class
    index without weights or smoothing this is :math:`-\log p_{n y_n}`.

    Parameters
    ----------
    logits : array_like, shape (..., C, ...)
        Unnormalised scores; the class axis is ``axis``.
    target : array_like
        Either integer class indices with the shape of ``logits`` without the
        class axis, or probabilities (floating dtype) with the shape of ``logits``.
    axis : int, default -1
        The class axis. ``axis=1`` is PyTorch's layout.
    weight : array_like of shape (C,), optional
        Per-class weights :math:`w_c`.
    ignore_index : int, default -100
        Class-index targets equal to this contribute nothing to the loss, the
        gradient or the mean's denominator. Not used for probability targets.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides the sum by :math:`\sum_n w_{y_n}` over the
        non-ignored elements (class indices; the count of them without
        weights), or by the number of elements (probability targets), as
        PyTorch does. A mean over zero terms (every target ignored, zero
        total weight, an empty batch) is 0/0 = NaN, as in PyTorch.
    label_smoothing : float in [0, 1], default 0
        :math:`\varepsilon`, mixing the target with the uniform distribution.

    Returns
    -------
    ndarray
        A scalar for ``"mean"`` and ``"sum"``; per-element losses with the
        shape of ``logits`` without the class axis for ``"none"``. Same
        floating dtype as ``logits``.

    Raises
    ------
    ValueError
        For a label outside ``[0, C)`` other than ``ignore_index``, a target of
        the wrong shape or dtype, an empty class axis, an unknown
        ``reduction``, ``label_smoothing`` outside ``[0, 1]`` (PyTorch accepts
        a negative one), or a ``weight`` that is not of shape ``(C,)``.

    Notes
    -----
    Non-finite logits, as in PyTorch: a ``-inf`` logit is a class of
    probability exactly 0 (the loss is ``+inf`` if that class has a positive
    coefficient :math:`q_c`); a row with a ``+inf`` or NaN logit, or with every
    logit ``-inf``, has no softmax, and its loss is NaN unless its target is
    ignored (then 0). One deliberate difference: a class whose coefficient
    :math:`q_c` is 0 (a zero target probability, a zero class weight) at a
    ``-inf`` logit contributes 0 (:math:`0 \log 0 = 0`); PyTorch returns NaN there.
    """
    fast = fast_cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing, False)
    if fast is not None:
        return fast[0]
    return _reference_cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing)


def _reference_cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing):
    """The readable reference: ``-sum_c q_c log_softmax(z)_c``, any target, any option."""
    terms = _cross_entropy_terms(logits, target, axis, weight, ignore_index, reduction, label_smoothing)
    logp = log_softmax(terms.z, axis=-1)  # a NaN row where the logits have no softmax
    # A class with q = 0 contributes 0 even where log p = -inf (masked logits); an ignored row, 0.
    per_element = np.where(terms.keep, -np.sum(times_or_zero(terms.q, logp), axis=-1), 0.0)
    return reduce(per_element, reduction, terms.dtype, terms.denominator)


def cross_entropy_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> NDArray:
    r"""Gradient of :func:`cross_entropy` with respect to the logits.

    Course: :prf:ref:`gr-thm-gradient`, equations :eq:`gr-general` and :eq:`gr-main`, in
    :doc:`/book/part1/gradient`.

    .. math::

        \frac{\partial \ell_n}{\partial z_{nc}} = \Bigl(\sum_k q_{nk}\Bigr) p_{nc} - q_{nc},

    which is the familiar :math:`p - e_y` for a one-hot target without weights
    or smoothing. It never divides by a probability, so it stays finite and in
    :math:`[-\max w, \max w]` however small :math:`p` gets. Under ``"mean"`` it
    is divided by the same denominator as the loss. It is evaluated as
    :math:`(\sum_{k \ne c} q_{nk}) p_{nc} - q_{nc} \sum_{k \ne c} p_{nk}`, which has
    no cancellation when :math:`p_{nc}` rounds to 1. Each entry's error is a few
    rounding units of the larger of its two terms (at most :math:`\max(q_{nc}, p_{nc})`
    when :math:`\sum_k q_{nk} = 1`); for a one-hot target without smoothing every entry is
    relatively accurate. Where :math:`p_{nc} \approx q_{nc}` (probability targets
    or smoothing) the two terms nearly cancel, and the entry can be much smaller
    than that error (PyTorch's too).

    Parameters
    ----------
    logits, target, axis, weight, ignore_index, reduction, label_smoothing
        As for :func:`cross_entropy`.

    Returns
    -------
    ndarray
        Same shape and dtype as ``logits``.

    Notes
    -----
    A row whose logits have no softmax (a ``+inf`` or NaN logit, or all
    ``-inf``) has a NaN gradient, as in PyTorch. Two deliberate differences
    from PyTorch: a mean over zero terms has gradient 0 (PyTorch agrees when
    every target is ignored but returns NaN for a zero total class weight),
    and an ignored row has gradient 0 whatever its logits (PyTorch: NaN for
    an ignored row without a softmax).
    """
    fast = fast_cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing, True)
    if fast is not None:
        return fast[1]
    args = (logits, target, axis, weight, ignore_index, reduction, label_smoothing)
    return _reference_cross_entropy_grad(*args)


def _reference_cross_entropy_grad(logits, target, axis, weight, ignore_index, reduction, label_smoothing):
    """The readable reference: ``(sum_c q_c) softmax(z) - q``, any target, any option.

    Computed as ``(sum_{k != c} q_k) p_c - q_c (sum_{k != c} p_k)``, the same
    number without the cancellation of ``(sum q) p_c - q_c`` when ``p_c``
    rounds to 1: ``sum_{k != c} p_k = 1 - p_c`` stays accurate (see
    :func:`~ce_lib.functional.sum_of_others`).
    """
    terms = _cross_entropy_terms(logits, target, axis, weight, ignore_index, reduction, label_smoothing)
    p = softmax(terms.z, axis=-1)  # a NaN row where the logits have no softmax
    grad = sum_of_others(terms.q, -1) * p - terms.q * sum_of_others(p, -1)
    grad = np.where(terms.keep[..., None], grad, 0.0)  # an ignored row is absent, whatever its logits
    grad = grad * reduction_scale(reduction, terms.denominator)
    return np.moveaxis(grad, -1, terms.axis).astype(terms.dtype, copy=False)


def cross_entropy_value_and_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> tuple[NDArray, NDArray]:
    r""":func:`cross_entropy` and :func:`cross_entropy_grad` in one pass over the logits.

    Course: :prf:ref:`sc-thm-one-pass`, equation :eq:`sc-one-pass`, in :doc:`/book/part2/scale`.

    For class-index targets without ``weight`` or ``label_smoothing`` (the
    common case) the value and the gradient :math:`(p - e_y)/N` share one
    exponential per logit: about the cost of one ``np.exp(logits)``, and no
    memory beyond the returned gradient but a few rows of scratch. Every other
    case computes the two separately by the reference formulas.

    Parameters
    ----------
    logits, target, axis, weight, ignore_index, reduction, label_smoothing
        As for :func:`cross_entropy`.

    Returns
    -------
    (ndarray, ndarray)
        ``cross_entropy(...)`` and ``cross_entropy_grad(...)``.
    """
    fast = fast_cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing, True)
    if fast is not None:
        return fast
    args = (logits, target, axis, weight, ignore_index, reduction, label_smoothing)
    return _reference_cross_entropy(*args), _reference_cross_entropy_grad(*args)
