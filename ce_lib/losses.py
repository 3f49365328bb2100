"""Classification losses and their closed-form gradients.

Each loss ``L`` comes with ``L_grad``, which takes the same arguments and
returns the gradient of the *reduced* loss with respect to the first argument
(for ``reduction="none"``, the gradient of the sum of the per-element losses).
Gradients are closed forms written next to the formula they differentiate;
none goes through autodiff or through the C x C softmax Jacobian.

Conventions follow ``torch.nn.functional`` (argument names, ``reduction``
rules, ``ignore_index=-100``, the weighting and label-smoothing formulas),
except that the class axis is chosen with ``axis=`` (default ``-1``, the
NumPy convention); ``axis=1`` reproduces PyTorch's ``(N, C, d1, ...)`` layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import (
    REDUCTIONS,
    as_float_array,
    check_broadcastable_to,
    check_class_target,
    check_class_weight,
    check_reduction,
    check_same_shape,
    normalize_axis,
    reduce,
    reduction_scale,
)
from .functional import log_softmax, logsumexp, sigmoid, softmax, softplus

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_grad",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "cross_entropy",
    "cross_entropy_grad",
    "cross_entropy_value_and_grad",
    "hinge_loss",
    "hinge_loss_grad",
    "lse_hinge_loss",
    "lse_hinge_loss_grad",
    "mse_loss",
    "mse_loss_grad",
    "multi_margin_loss",
    "multi_margin_loss_grad",
    "z_loss",
    "z_loss_grad",
]


# --------------------------------------------------------------------------
# Cross-entropy
# --------------------------------------------------------------------------


@dataclass
class _CrossEntropyTerms:
    """Everything the loss and its gradient share, in class-axis-last layout.

    Every variant of cross-entropy (class indices or probabilities, class
    weights, label smoothing, ignored targets) is the same formula

    .. math::  \\ell_n = -\\sum_c q_{nc} \\log p_{nc}

    with a coefficient array ``q`` built from the target; its gradient with
    respect to the logits is ``(sum_c q_nc) p_n - q_n``.
    """

    z: NDArray  # logits, class axis last
    q: NDArray  # coefficients of -log p, same shape as z
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
        z = np.moveaxis(z, ax, -1)
        t = np.moveaxis(t, ax, -1).astype(z.dtype, copy=False)
        q = (1.0 - eps) * t + eps / n_classes
        if w is not None:
            q = q * w
        return _CrossEntropyTerms(z, q, float(np.prod(z.shape[:-1])), ax, dtype)

    # Class-index targets, shape of the logits without the class axis:
    z = np.moveaxis(z, ax, -1)
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
    return _CrossEntropyTerms(z, q, float(w_y.sum()), ax, dtype)


def _reduce_ce(per_element: NDArray, terms: _CrossEntropyTerms, reduction: str) -> NDArray:
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = per_element.sum() / terms.denominator
        return np.asarray(mean, dtype=terms.dtype)[()]
    return reduce(per_element, reduction, terms.dtype)


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
        PyTorch does. If every target is ignored the mean is 0/0 = NaN.
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
        ``reduction``, ``label_smoothing`` outside ``[0, 1]``, or a ``weight``
        that is not of shape ``(C,)``.
    """
    fast = _fast_cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing, False)
    if fast is not None:
        return fast[0]
    return _reference_cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing)


def _reference_cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing):
    """The readable reference: ``-sum_c q_c log_softmax(z)_c``, any target, any option."""
    terms = _cross_entropy_terms(logits, target, axis, weight, ignore_index, reduction, label_smoothing)
    logp = log_softmax(terms.z, axis=-1)
    with np.errstate(invalid="ignore"):
        # A class with q = 0 contributes 0 even where log p = -inf (masked logits).
        per_element = -np.sum(np.where(terms.q != 0, terms.q * logp, 0.0), axis=-1)
    return _reduce_ce(per_element, terms, reduction)


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

    .. math::

        \frac{\partial \ell_n}{\partial z_{nc}} = \Bigl(\sum_k q_{nk}\Bigr) p_{nc} - q_{nc},

    which is the familiar :math:`p - e_y` for a one-hot target without weights
    or smoothing. It never divides by a probability, so it stays finite and in
    :math:`[-\max w, \max w]` however small :math:`p` gets. Under ``"mean"`` it
    is divided by the same denominator as the loss.

    Parameters
    ----------
    logits, target, axis, weight, ignore_index, reduction, label_smoothing
        As for :func:`cross_entropy`.

    Returns
    -------
    ndarray
        Same shape and dtype as ``logits``.
    """
    fast = _fast_cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing, True)
    if fast is not None:
        return fast[1]
    args = (logits, target, axis, weight, ignore_index, reduction, label_smoothing)
    return _reference_cross_entropy_grad(*args)


def _reference_cross_entropy_grad(logits, target, axis, weight, ignore_index, reduction, label_smoothing):
    """The readable reference: ``(sum_c q_c) softmax(z) - q``, any target, any option."""
    terms = _cross_entropy_terms(logits, target, axis, weight, ignore_index, reduction, label_smoothing)
    p = softmax(terms.z, axis=-1)
    grad = terms.q.sum(axis=-1, keepdims=True) * p - terms.q
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            grad = grad / terms.denominator
    return np.moveaxis(grad, -1, terms.axis).astype(terms.dtype, copy=False)


# --------------------------------------------------------------------------
# Cross-entropy, fast path: class-index targets without weights or smoothing
# --------------------------------------------------------------------------
#
# The reference functions above build a dense coefficient array q and take
# log_softmax and softmax separately: about ten passes over N x C numbers. For
# the common case (integer labels, no class weights, no label smoothing) the
# same value and gradient need only one exponential per logit and two cheap
# passes over data that is still in the cache:
#
#   e = exp(z)                    (softmax is shift invariant: the max-shift is
#                                  needed only where exp(z) would overflow)
#   r = sum_{c != y} e_c,  s = r + e_y
#   loss = log(1 + r / e_y)       (= LSE(z) - z_y without cancellation)
#   grad = e / s,  with -r / s at the target (= p_y - 1 without cancellation)
#
# Rows where exp(z) without a shift is not safe (s overflows, or s < 1 so that
# small probabilities might underflow where the shifted form keeps them) are
# redone with the usual max-shift; rows with NaN or inf logits, and every other
# option, go to the reference. tests/test_scale.py checks this path against
# the reference.

# Rows are processed in blocks of about this many bytes, so that a block is
# still in the (per-core) L2 cache for the passes after the exponential.
_BLOCK_BYTES = 1 << 20


def _ce_rows(
    z: NDArray, y: NDArray, out: NDArray | None, scale: float, shift: NDArray | None = None
) -> tuple[NDArray, NDArray]:
    """Per-row cross-entropy of ``z`` (n, C) and ``out = scale * (softmax(z) - onehot(y))``.

    ``z`` is C-contiguous float32 or float64; ``y`` holds labels in ``[0, C)``;
    ``out`` has the shape and dtype of ``z`` and may be ``z`` itself (in place),
    or is ``None`` for the loss alone; ``shift`` is ``None`` (exponentiate ``z``
    as it is) or a finite per-row shift, normally the row maximum. Returns the
    per-row losses (float64) and a mask of the rows for which the computation
    was safe (``1 <= s < inf``); the other rows of the result are garbage.
    """
    n, n_classes = z.shape
    dtype = z.dtype
    if shift is not None:
        shift = shift.astype(dtype).astype(np.float64)  # the same shift in the block and in log_z
    rows_per_block = max(1, _BLOCK_BYTES // (n_classes * z.itemsize))
    all_rows = np.arange(n)
    z_y = z[all_rows, y].astype(np.float64)  # before an in-place `out` overwrites z
    e_y = np.empty(n)
    rest = np.empty(n)
    ones = np.ones(n_classes, dtype=dtype)
    scratch = np.empty((min(rows_per_block, n), n_classes), dtype=dtype) if out is None else None
    for i in range(0, n, rows_per_block):
        j = min(i + rows_per_block, n)
        r, y_b = all_rows[: j - i], y[i:j]
        block = out[i:j] if out is not None else scratch[: j - i]
        if shift is None:
            np.exp(z[i:j], out=block)
        else:
            np.subtract(z[i:j], shift[i:j, None].astype(dtype), out=block)
            np.exp(block, out=block)
        e_y[i:j] = block[r, y_b]
        block[r, y_b] = 0
        rest[i:j] = block @ ones  # sum over the classes other than y (a BLAS matrix-vector product)
        if out is not None:
            s = rest[i:j] + e_y[i:j]
            np.multiply(block, (scale / s).astype(dtype)[:, None], out=block)
            block[r, y_b] = -scale * rest[i:j] / s
    s = rest + e_y
    ok = (s >= 1) & (s < np.inf)
    log_z = np.log(s) if shift is None else shift + np.log(s)
    # log1p(r / e_y) is accurate to a few roundings; where r / e_y overflows (or
    # e_y underflowed to 0) the loss is huge and LSE - z_y has no cancellation.
    # (A subnormal e_y has too few bits for the ratio: use LSE - z_y there too.)
    ratio = rest / e_y
    accurate = (e_y >= np.finfo(dtype).tiny) & np.isfinite(ratio)
    loss = np.where(accurate, np.log1p(ratio), log_z - z_y)
    return loss, ok


def _fast_cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    axis: int,
    weight: ArrayLike | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    want_grad: bool,
) -> tuple[NDArray, NDArray | None] | None:
    """``(loss, grad or None)`` by the fast path, or ``None`` where only the reference applies.

    Returning ``None`` for every case it does not handle (including bad
    arguments) leaves the error messages to the reference.
    """
    if weight is not None or label_smoothing != 0 or reduction not in REDUCTIONS:
        return None
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        return None
    z, dtype = as_float_array(logits, "logits")
    try:
        ax = normalize_axis(axis, z.ndim)
    except ValueError:
        return None
    n_classes = z.shape[ax]
    if n_classes == 0 or z.size == 0:
        return None
    batch_shape = z.shape[:ax] + z.shape[ax + 1 :]
    y = check_class_target(t, batch_shape, n_classes, ignore_index).reshape(-1)
    z2 = np.ascontiguousarray(np.moveaxis(z, ax, -1)).reshape(-1, n_classes)  # a copy only if axis != -1
    keep = y != ignore_index
    count = int(np.count_nonzero(keep))
    if reduction == "mean" and count == 0:
        return None  # 0/0: the reference returns its NaNs
    scale = 1.0 / count if reduction == "mean" else 1.0
    y_safe = np.where(keep, y, 0)
    grad = np.empty_like(z2) if want_grad else None
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        loss, ok = _ce_rows(z2, y_safe, grad, scale)
        if not ok.all():  # redo these rows with the max-shift
            bad = np.flatnonzero(~ok)
            z_bad = z2[bad]
            m = z_bad.max(axis=1).astype(np.float64)
            if not np.isfinite(m).all():
                return None  # NaN or +inf logits: the reference propagates them
            g_bad = np.empty_like(z_bad) if want_grad else None
            loss_bad, ok_bad = _ce_rows(z_bad, y_safe[bad], g_bad, scale, shift=m)
            if not ok_bad.all():
                return None
            loss[bad] = loss_bad
            if want_grad:
                grad[bad] = g_bad
    if count < y.size:
        loss[~keep] = 0.0
        if want_grad:
            grad[~keep] = 0
    if reduction == "none":
        value = loss.reshape(batch_shape).astype(dtype)
    else:
        value = np.asarray(loss.sum() * (scale if reduction == "mean" else 1.0), dtype=dtype)[()]
    if want_grad:
        grad = np.moveaxis(grad.reshape(*batch_shape, n_classes), -1, ax).astype(dtype, copy=False)
    return value, grad


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
    fast = _fast_cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing, True)
    if fast is not None:
        return fast
    args = (logits, target, axis, weight, ignore_index, reduction, label_smoothing)
    return _reference_cross_entropy(*args), _reference_cross_entropy_grad(*args)


# --------------------------------------------------------------------------
# Binary cross-entropy
# --------------------------------------------------------------------------


# PyTorch's BCE backward clamps a(1 - a) below at EPSILON = 1e-12, a float32
# constant even for float64 tensors: float32(1e-12) = 9.99999996e-13.
_BCE_GRAD_EPS = float(np.float32(1e-12))


def _bce_inputs(
    x: ArrayLike, target: ArrayLike, weight: ArrayLike | None, reduction: str, x_name: str
) -> tuple[NDArray, NDArray, NDArray | None, np.dtype]:
    a, dtype = as_float_array(x, x_name)
    t, _ = as_float_array(target, "target")
    check_same_shape(a, t, x_name, "target")
    check_reduction(reduction)
    w = None
    if weight is not None:
        w, _ = as_float_array(weight, "weight")
        check_broadcastable_to(w, a.shape, "weight", x_name)
    return a, t.astype(a.dtype, copy=False), w, dtype


def _check_unit_interval(a: NDArray, name: str) -> None:
    bad = ~((a >= 0) & (a <= 1))
    if np.any(bad):
        raise ValueError(f"{name} must be probabilities in [0, 1]; found {float(a[bad].flat[0])}")


def binary_cross_entropy(
    probs: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
) -> NDArray:
    r"""Binary cross-entropy between predicted probabilities and targets.

    .. math::

        \ell_n = -w_n \bigl[\, y_n \log a_n + (1 - y_n) \log(1 - a_n) \bigr],

    with each log clamped below at :math:`-100` as in PyTorch, so that a
    confident wrong prediction (:math:`a_n = 0`, :math:`y_n = 1`) costs 100
    instead of infinity. Prefer :func:`binary_cross_entropy_with_logits`,
    which never needs the clamp.

    Parameters
    ----------
    probs : array_like
        Predicted probabilities :math:`a_n \in [0, 1]`.
    target : array_like
        Targets :math:`y_n \in [0, 1]`, same shape as ``probs``.
    weight : array_like, optional
        Rescaling weight, broadcast to the shape of ``probs``.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` averages the per-element losses, ``"sum"`` adds them,
        ``"none"`` returns them.

    Returns
    -------
    ndarray
        Scalar, or per-element losses for ``"none"``.

    Raises
    ------
    ValueError
        For ``probs`` or ``target`` outside ``[0, 1]`` (or NaN), shapes that
        differ, or an unknown ``reduction``.
    """
    a, t, w, dtype = _bce_inputs(probs, target, weight, reduction, "probs")
    _check_unit_interval(a, "probs")
    _check_unit_interval(t, "target")
    with np.errstate(divide="ignore"):
        log_a = np.maximum(np.log(a), -100.0)
        log_1ma = np.maximum(np.log1p(-a), -100.0)
    loss = -(t * log_a + (1.0 - t) * log_1ma)
    if w is not None:
        loss = loss * w
    return reduce(loss, reduction, dtype)


def binary_cross_entropy_grad(
    probs: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
) -> NDArray:
    r"""Gradient of :func:`binary_cross_entropy` with respect to ``probs``.

    .. math::

        \frac{\partial \ell_n}{\partial a_n}
        = w_n \Bigl(\frac{1 - y_n}{1 - a_n} - \frac{y_n}{a_n}\Bigr)
        = w_n \frac{a_n - y_n}{a_n (1 - a_n)},

    with the denominator clamped below at :math:`10^{-12}` as in PyTorch's
    backward pass. Note the division by :math:`a(1-a)`: it is the
    :math:`\sigma'(z)` that the chain rule through a sigmoid multiplies back in.

    Parameters
    ----------
    probs, target, weight, reduction
        As for :func:`binary_cross_entropy`.

    Returns
    -------
    ndarray
        Same shape and dtype as ``probs``.
    """
    a, t, w, dtype = _bce_inputs(probs, target, weight, reduction, "probs")
    _check_unit_interval(a, "probs")
    _check_unit_interval(t, "target")
    grad = (a - t) / np.maximum(a * (1.0 - a), _BCE_GRAD_EPS)
    if w is not None:
        grad = grad * w
    return (grad * reduction_scale(reduction, a.size)).astype(dtype, copy=False)


def _bce_logits_pos_weight(pos_weight: ArrayLike | None, shape: tuple[int, ...]) -> NDArray | None:
    if pos_weight is None:
        return None
    pw, _ = as_float_array(pos_weight, "pos_weight")
    check_broadcastable_to(pw, shape, "pos_weight", "logits")
    return pw


def binary_cross_entropy_with_logits(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    reduction: str = "mean",
) -> NDArray:
    r"""Binary cross-entropy on logits, fused with the sigmoid.

    .. math::

        \ell_n = w_n \bigl[\, r\, y_n \operatorname{softplus}(-z_n)
                 + (1 - y_n) \operatorname{softplus}(z_n) \bigr],

    which is :math:`-w_n[r\,y_n \log\sigma(z_n) + (1-y_n)\log(1-\sigma(z_n))]`
    with :math:`-\log\sigma(z) = \operatorname{softplus}(-z)` and
    :math:`-\log(1-\sigma(z)) = \operatorname{softplus}(z)`; :math:`r` is
    ``pos_weight`` (1 if not given). Stable for any finite :math:`z`.

    Parameters
    ----------
    logits : array_like
        Scores :math:`z_n`.
    target : array_like
        Targets :math:`y_n`, same shape as ``logits``.
    weight : array_like, optional
        Rescaling weight, broadcast to the shape of ``logits``.
    pos_weight : array_like, optional
        Weight :math:`r` of the positive term, broadcast to the shape of
        ``logits`` (typically one entry per class, on the last axis).
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` averages the per-element losses, ``"sum"`` adds them,
        ``"none"`` returns them.

    Returns
    -------
    ndarray
        Scalar, or per-element losses for ``"none"``.
    """
    z, t, w, dtype = _bce_inputs(logits, target, weight, reduction, "logits")
    pw = _bce_logits_pos_weight(pos_weight, z.shape)
    positive = t * softplus(-z)
    if pw is not None:
        positive = pw * positive
    loss = positive + (1.0 - t) * softplus(z)
    if w is not None:
        loss = loss * w
    return reduce(loss, reduction, dtype)


def binary_cross_entropy_with_logits_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    reduction: str = "mean",
) -> NDArray:
    r"""Gradient of :func:`binary_cross_entropy_with_logits` with respect to the logits.

    .. math::

        \frac{\partial \ell_n}{\partial z_n}
        = w_n \bigl[(1 - y_n)\,\sigma(z_n) - r\, y_n\, (1 - \sigma(z_n))\bigr],

    which is :math:`w_n(\sigma(z_n) - y_n)` when :math:`r = 1`: no
    :math:`\sigma'(z)` factor, so no saturation.

    Parameters
    ----------
    logits, target, weight, pos_weight, reduction
        As for :func:`binary_cross_entropy_with_logits`.

    Returns
    -------
    ndarray
        Same shape and dtype as ``logits``.
    """
    z, t, w, dtype = _bce_inputs(logits, target, weight, reduction, "logits")
    pw = _bce_logits_pos_weight(pos_weight, z.shape)
    s = sigmoid(z)
    s_neg = sigmoid(-z)  # 1 - sigma(z), without cancellation
    positive = t * s_neg
    if pw is not None:
        positive = pw * positive
    grad = (1.0 - t) * s - positive
    if w is not None:
        grad = grad * w
    return (grad * reduction_scale(reduction, z.size)).astype(dtype, copy=False)


# --------------------------------------------------------------------------
# Mean squared error
# --------------------------------------------------------------------------


def _mse_inputs(pred: ArrayLike, target: ArrayLike, reduction: str) -> tuple[NDArray, NDArray, np.dtype]:
    a, dtype = as_float_array(pred, "pred")
    t, _ = as_float_array(target, "target")
    check_same_shape(a, t, "pred", "target")
    check_reduction(reduction)
    return a, t.astype(a.dtype, copy=False), dtype


def mse_loss(pred: ArrayLike, target: ArrayLike, *, reduction: str = "mean") -> NDArray:
    r"""Mean squared error.

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


# --------------------------------------------------------------------------
# Margin losses: multi-class SVM, and the hinge -> LSE -> softmax chain
# --------------------------------------------------------------------------


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
    hinge = np.maximum(margin - _target_logit(z, y)[..., None] + z, 0.0)
    hinge[onehot] = 0.0  # the sum runs over i != y
    return z, onehot, ax, dtype, hinge, w_y


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
    """
    z, _, _, dtype, hinge, w_y = _multi_margin_terms(logits, target, p, margin, weight, reduction, axis)
    per_sample = w_y * np.sum(hinge**p, axis=-1) / z.shape[-1]
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
    g = np.where(active, p * hinge ** (p - 1), 0.0) * (w_y / z.shape[-1])[..., None]
    g = g - onehot * g.sum(axis=-1, keepdims=True)
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

    .. math::

        \ell_n = \max\Bigl(\max_{i \ne y_n} z_{ni} - z_{ny_n} + m,\; 0\Bigr).

    This is the objective that chapter 5 of the course smooths, first with
    log-sum-exp (:func:`lse_hinge_loss`) and then with softplus, to arrive
    at :func:`cross_entropy`. With one class there is no competitor and the
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
    gap = np.max(_others(z, onehot), axis=-1) - _target_logit(z, y) + margin
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
    others = _others(z, onehot)
    active = (np.max(others, axis=-1) - _target_logit(z, y) + margin) > 0
    k = np.argmax(others, axis=-1)
    strongest = np.arange(z.shape[-1]) == k[..., None]
    g = (strongest.astype(z.dtype) - onehot) * active[..., None]
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

    .. math::

        \ell_n = \max\Bigl(\log \sum_{i \ne y_n} e^{z_{ni}} - z_{ny_n} + m,\; 0\Bigr).

    Replacing the outer :math:`\max(\cdot, 0)` by softplus (with :math:`m = 0`)
    gives exactly :func:`cross_entropy`:
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
    gap = logsumexp(_others(z, onehot), axis=-1) - _target_logit(z, y) + margin
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
    others = _others(z, onehot)
    active = (logsumexp(others, axis=-1) - _target_logit(z, y) + margin) > 0
    if z.shape[-1] > 1:
        g = softmax(others, axis=-1) - onehot
    else:  # no other class: the loss is identically 0
        g = np.zeros_like(z)
    g = g * active[..., None] * reduction_scale(reduction, y.size)
    return np.moveaxis(g, -1, ax).astype(dtype, copy=False)


# --------------------------------------------------------------------------
# z-loss: keep the log-partition function near zero
# --------------------------------------------------------------------------


def _z_loss_inputs(logits: ArrayLike, axis: int, reduction: str) -> tuple[NDArray, int, np.dtype]:
    z, dtype = as_float_array(logits, "logits")
    ax = normalize_axis(axis, z.ndim)
    check_reduction(reduction)
    if z.shape[ax] == 0:
        raise ValueError(f"logits has an empty class axis (axis={axis}, shape {z.shape})")
    return z, ax, dtype


def z_loss(logits: ArrayLike, *, axis: int = -1, reduction: str = "mean") -> NDArray:
    r"""The z-loss: the squared log-partition function of the softmax.

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
        Scalar, or per-sample losses for ``"none"``.
    """
    z, ax, dtype = _z_loss_inputs(logits, axis, reduction)
    return reduce(logsumexp(z, axis=ax) ** 2, reduction, dtype)


def z_loss_grad(logits: ArrayLike, *, axis: int = -1, reduction: str = "mean") -> NDArray:
    r"""Gradient of :func:`z_loss` with respect to the logits.

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
    grad = 2.0 * lse * softmax(z, axis=ax) * reduction_scale(reduction, lse.size)
    return grad.astype(dtype, copy=False)
