"""Focal loss (Lin et al., 2017): cross-entropy that down-weights easy examples.

Multiplying :math:`-\\log p_t` by :math:`(1 - p_t)^\\gamma` leaves the loss of a
badly classified example almost unchanged and shrinks that of an example the
model already gets right with confidence, so that the many easy examples (the
background of a detector) stop dominating the gradient.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import (
    as_float_array,
    check_class_weight,
    check_reduction,
    check_same_shape,
    reduce,
    reduction_scale,
)
from .functional import log_sigmoid, log_softmax, shifted_rows, sigmoid, softmax, softplus, times_or_zero
from .hinge import _class_inputs, _target_logit

__all__ = ["focal_loss", "focal_loss_grad", "sigmoid_focal_loss", "sigmoid_focal_loss_grad"]


def _check_gamma(gamma: float) -> float:
    if not (np.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0; got {gamma!r}")
    return float(gamma)


def _focal_terms(
    logits: ArrayLike, target: ArrayLike, gamma: float, alpha: ArrayLike | None, axis: int, reduction: str
) -> tuple[NDArray, NDArray, NDArray, NDArray, NDArray, int, np.dtype]:
    """Logits (class axis last), one-hot, log p_y, 1 - p_y, alpha_y, axis, dtype."""
    _check_gamma(gamma)
    z, y, onehot, ax, dtype = _class_inputs(logits, target, axis, reduction)
    a = check_class_weight(alpha, z.shape[-1], z.dtype)
    alpha_y = np.ones(y.shape, dtype=z.dtype) if a is None else a[y]
    z, _ = shifted_rows(z)  # the row max first: a row without a finite one is NaN
    logp_y = _target_logit(log_softmax(z, axis=-1), y)
    one_minus_p = -np.expm1(logp_y)  # 1 - p_y without cancellation when p_y is near 1
    return z, onehot, logp_y, one_minus_p, alpha_y, ax, dtype


def focal_loss(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    gamma: float = 2.0,
    alpha: ArrayLike | None = None,
    axis: int = -1,
    reduction: str = "mean",
) -> NDArray:
    r"""Softmax focal loss for integer class targets.

    Course: :prf:ref:`tg-def-focal`, equation :eq:`tg-focal`, in :doc:`/book/part2/targets`.

    .. math::

        \ell_n = -\alpha_{y_n} (1 - p_{n y_n})^\gamma \log p_{n y_n},
        \qquad p_n = \operatorname{softmax}(z_n).

    ``gamma=0`` and no ``alpha`` is :func:`~ce_lib.categorical.cross_entropy`.

    Parameters
    ----------
    logits : array_like, shape (..., C, ...)
        Unnormalised scores; the class axis is ``axis``.
    target : array_like of int
        Class indices, shape of ``logits`` without the class axis.
    gamma : float, default 2.0
        Focusing parameter :math:`\gamma \ge 0`.
    alpha : array_like of shape (C,), optional
        Per-class weights :math:`\alpha_c`; a sample whose class has weight 0
        adds 0, even where its loss is infinite.
    axis : int, default -1
        The class axis.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` averages the per-sample losses (not weight-normalised; NaN
        for an empty batch), ``"sum"`` adds them, ``"none"`` returns them.

    Returns
    -------
    ndarray
        Scalar, or per-sample losses for ``"none"``.

    Notes
    -----
    Computed from ``z - max(z)``, so it is invariant to a common offset of a
    row. A ``-inf`` logit is a class of probability 0; at the target it makes
    the loss ``+inf`` (with the finite gradient :math:`\alpha_y (p - e_y)`, see
    :func:`focal_loss_grad`). A row with no finite maximum (all ``-inf``, a
    ``+inf`` or a NaN entry) is NaN, as in PyTorch's softmax.
    """
    _, _, logp_y, one_minus_p, alpha_y, _, dtype = _focal_terms(logits, target, gamma, alpha, axis, reduction)
    return reduce(times_or_zero(alpha_y, one_minus_p**gamma * -logp_y), reduction, dtype)


def focal_loss_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    gamma: float = 2.0,
    alpha: ArrayLike | None = None,
    axis: int = -1,
    reduction: str = "mean",
) -> NDArray:
    r"""Gradient of :func:`focal_loss` with respect to the logits.

    Course: :prf:ref:`tg-thm-focal-grad`, equation :eq:`tg-focal-grad`, in :doc:`/book/part2/targets`.

    Using :math:`\partial p_y/\partial z = p_y (e_y - p)` and
    :math:`\partial \log p_y/\partial z = e_y - p`,

    .. math::

        \nabla_{z_n} \ell_n = \alpha_{y}\bigl[(1 - p_y)^\gamma
            - \gamma\, p_y (1 - p_y)^{\gamma - 1} \log p_y\bigr]\,(p_n - e_{y}),

    the cross-entropy gradient :math:`p - e_y` times a per-example factor
    that is small for easy examples (:math:`p_y \to 1`). Both limits of the
    bracket are finite: :math:`1` as :math:`p_y \to 0` (a target logit of
    ``-inf``: :math:`p_y \log p_y \to 0`) and, for :math:`\gamma > 0`, :math:`0` as
    :math:`p_y \to 1` (for :math:`\gamma = 0` the bracket is 1: cross-entropy).

    Parameters
    ----------
    logits, target, gamma, alpha, axis, reduction
        As for :func:`focal_loss`.

    Returns
    -------
    ndarray
        Same shape and dtype as ``logits``.
    """
    z, onehot, logp_y, one_minus_p, alpha_y, ax, dtype = _focal_terms(
        logits, target, gamma, alpha, axis, reduction
    )
    p_y = np.exp(logp_y)
    # gamma p_y (1 - p_y)^(gamma - 1) log p_y, written with (log p_y)/(1 - p_y), which tends to -1
    # as p_y -> 1, so that (1 - p_y)^(gamma - 1) cannot overflow for gamma < 1.
    with np.errstate(divide="ignore", invalid="ignore"):
        second = gamma * p_y * one_minus_p**gamma * (logp_y / one_minus_p)
    # Its limit is 0 both as p_y -> 1 and as p_y -> 0 (p log p -> 0: the target's logit is -inf).
    second = np.where((one_minus_p > 0) & (p_y > 0), second, 0.0)
    factor = times_or_zero(alpha_y, one_minus_p**gamma - second)
    grad = factor[..., None] * (softmax(z, axis=-1) - onehot) * reduction_scale(reduction, factor.size)
    return np.moveaxis(grad, -1, ax).astype(dtype, copy=False)


def _sigmoid_focal_inputs(
    logits: ArrayLike, target: ArrayLike, gamma: float, alpha: float, reduction: str
) -> tuple[NDArray, NDArray, NDArray, np.dtype]:
    """Logits, the sign s = 2t - 1 of the binary targets, alpha_t, dtype."""
    _check_gamma(gamma)
    z, dtype = as_float_array(logits, "logits")
    t = np.asarray(target)
    check_same_shape(z, t, "logits", "target")
    check_reduction(reduction)
    if not np.all((t == 0) | (t == 1)):
        raise ValueError("target must contain only 0 and 1 for sigmoid_focal_loss")
    if not (alpha < 0 or 0 <= alpha <= 1):
        raise ValueError(f"alpha must be in [0, 1], or negative to switch it off; got {alpha!r}")
    sign = 2.0 * t.astype(z.dtype) - 1.0
    alpha_t = np.ones_like(z) if alpha < 0 else np.where(t == 1, alpha, 1.0 - alpha).astype(z.dtype)
    return z, sign, alpha_t, dtype


def _sigmoid_power(x: NDArray, gamma: float) -> NDArray:
    r""":math:`\sigma(x)^\gamma` as ``exp(gamma * log_sigmoid(x))`` (no early underflow); 1 for gamma = 0."""
    if not gamma:
        return np.ones_like(x)
    with np.errstate(invalid="ignore"):  # a gamma that underflows in float32 meets log 0 = -inf
        return np.where(x == -np.inf, 0.0, np.exp(gamma * log_sigmoid(x)))


def sigmoid_focal_loss(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "mean",
) -> NDArray:
    r"""Binary (sigmoid) focal loss of Lin et al., as in ``torchvision.ops.sigmoid_focal_loss``.

    Course: the sigmoid version of :prf:ref:`tg-def-focal`, equation :eq:`tg-focal`, in
    :doc:`/book/part2/targets`.

    With :math:`p_t = \sigma(s z)` for the sign :math:`s = 2t - 1` of the
    target :math:`t \in \{0, 1\}`,

    .. math::

        \ell = -\alpha_t (1 - p_t)^\gamma \log p_t
             = \alpha_t\, \sigma(-s z)^\gamma \operatorname{softplus}(-s z),

    with :math:`\alpha_t = \alpha` for positives and :math:`1 - \alpha` for
    negatives. The paper's defaults are :math:`\alpha = 0.25`, :math:`\gamma = 2`.
    Elementwise, so infinite logits keep their limits: ``inf`` where
    :math:`p_t = 0` (with a finite gradient), 0 where :math:`p_t = 1`; a
    term of weight :math:`\alpha_t = 0` is 0.

    Parameters
    ----------
    logits : array_like
        Scores :math:`z`.
    target : array_like
        Binary targets (0 or 1), same shape as ``logits``.
    alpha : float, default 0.25
        Weight of the positive class, in [0, 1]; a negative value disables it.
    gamma : float, default 2.0
        Focusing parameter :math:`\gamma \ge 0`.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` averages the per-element losses, ``"sum"`` adds them,
        ``"none"`` returns them.

    Returns
    -------
    ndarray
        Scalar, or per-element losses for ``"none"``.
    """
    z, sign, alpha_t, dtype = _sigmoid_focal_inputs(logits, target, gamma, alpha, reduction)
    u = sign * z
    loss = times_or_zero(alpha_t, _sigmoid_power(-u, gamma) * softplus(-u))
    return reduce(loss, reduction, dtype)


def sigmoid_focal_loss_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "mean",
) -> NDArray:
    r"""Gradient of :func:`sigmoid_focal_loss` with respect to the logits.

    Course: the gradient of the sigmoid version of :prf:ref:`tg-def-focal` in :doc:`/book/part2/targets`
    (the chapter checks it numerically and states no closed form).

    .. math::

        \frac{\partial \ell}{\partial z} = -s\,\alpha_t\, \sigma(-sz)^\gamma
            \bigl[\gamma\, \sigma(sz)\operatorname{softplus}(-sz) + \sigma(-sz)\bigr]

    (for :math:`\gamma = 0`, :math:`\alpha_t = 1` this is :math:`\sigma(z) - t`).

    Parameters
    ----------
    logits, target, alpha, gamma, reduction
        As for :func:`sigmoid_focal_loss`.

    Returns
    -------
    ndarray
        Same shape and dtype as ``logits``.
    """
    z, sign, alpha_t, dtype = _sigmoid_focal_inputs(logits, target, gamma, alpha, reduction)
    u = sign * z
    # sigma(u) softplus(-u) -> 0 as u -> -inf (e^u |u|): the limit where p_t = 0 exactly.
    with np.errstate(invalid="ignore"):
        first = np.where(sigmoid(u) == 0, 0.0, gamma * sigmoid(u) * softplus(-u))
    grad = -sign * times_or_zero(alpha_t, _sigmoid_power(-u, gamma) * (first + sigmoid(-u)))
    return (grad * reduction_scale(reduction, z.size)).astype(dtype, copy=False)
