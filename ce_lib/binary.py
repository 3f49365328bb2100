"""Binary cross-entropy, on probabilities and on logits, with closed-form gradients.

Conventions follow ``torch.nn.functional.binary_cross_entropy`` and
``binary_cross_entropy_with_logits`` (the log clamp at -100, the backward's
clamp of a(1 - a), ``weight`` and ``pos_weight`` broadcast to the input).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import (
    as_float_array,
    check_broadcastable_to,
    check_reduction,
    check_same_shape,
    reduce,
    reduction_scale,
)
from .functional import sigmoid, softplus, times_or_zero

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_grad",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
]


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

    Course: equation :eq:`ce-eq-binary` in :doc:`/book/part1/cross_entropy`.

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

    Course: equation :eq:`mse-dbce-da`, in the proof of :prf:ref:`mse-thm-grad-bce`, in
    :doc:`/book/part1/mse_vs_ce`.

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

    Course: :prf:ref:`st-thm-bce`, equation :eq:`st-eq-bce-stable`, in :doc:`/book/part2/stability`.

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

    Notes
    -----
    At an infinite logit the loss is its limit: a term whose coefficient
    (:math:`y_n`, :math:`1 - y_n`, :math:`r` or :math:`w_n`) is 0 is absent, so
    :math:`z = +\infty, y = 1` and :math:`z = -\infty, y = 0` cost 0, and
    :math:`z = -\infty, y > 0` costs :math:`+\infty`. PyTorch returns NaN
    there (its formula multiplies 0 by an infinity); the gradient agrees with
    PyTorch's.
    """
    z, t, w, dtype = _bce_inputs(logits, target, weight, reduction, "logits")
    pw = _bce_logits_pos_weight(pos_weight, z.shape)
    # A term with coefficient 0 is absent, even where its softplus is infinite (z = +-inf).
    positive = times_or_zero(t, softplus(-z))
    if pw is not None:
        positive = times_or_zero(pw, positive)
    loss = positive + times_or_zero(1.0 - t, softplus(z))
    if w is not None:
        loss = times_or_zero(w, loss)
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

    Course: :prf:ref:`mse-thm-grad-bce`, equation :eq:`mse-grad-bce`, in :doc:`/book/part1/mse_vs_ce`.

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
