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
from .functional import log_sigmoid, log_softmax, sigmoid, softmax, softplus
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
        Per-class weights :math:`\alpha_c`.
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
    _, _, logp_y, one_minus_p, alpha_y, _, dtype = _focal_terms(logits, target, gamma, alpha, axis, reduction)
    return reduce(-alpha_y * one_minus_p**gamma * logp_y, reduction, dtype)


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

    Using :math:`\partial p_y/\partial z = p_y (e_y - p)` and
    :math:`\partial \log p_y/\partial z = e_y - p`,

    .. math::

        \nabla_{z_n} \ell_n = \alpha_{y}\bigl[(1 - p_y)^\gamma
            - \gamma\, p_y (1 - p_y)^{\gamma - 1} \log p_y\bigr]\,(p_n - e_{y}),

    the cross-entropy gradient :math:`p - e_y` times a per-example factor
    that is small for easy examples (:math:`p_y \to 1`).

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
    with np.errstate(divide="ignore", invalid="ignore"):
        second = gamma * p_y * one_minus_p ** (gamma - 1) * logp_y
    second = np.where(one_minus_p > 0, second, 0.0)  # its limit as p_y -> 1 is 0
    factor = alpha_y * (one_minus_p**gamma - second)
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


def sigmoid_focal_loss(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "mean",
) -> NDArray:
    r"""Binary (sigmoid) focal loss of Lin et al., as in ``torchvision.ops.sigmoid_focal_loss``.

    With :math:`p_t = \sigma(s z)` for the sign :math:`s = 2t - 1` of the
    target :math:`t \in \{0, 1\}`,

    .. math::

        \ell = -\alpha_t (1 - p_t)^\gamma \log p_t
             = \alpha_t\, \sigma(-s z)^\gamma \operatorname{softplus}(-s z),

    with :math:`\alpha_t = \alpha` for positives and :math:`1 - \alpha` for
    negatives. The paper's defaults are :math:`\alpha = 0.25`, :math:`\gamma = 2`.

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
    loss = alpha_t * np.exp(gamma * log_sigmoid(-sign * z)) * softplus(-sign * z)
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
    grad = -sign * alpha_t * sigmoid(-u) ** gamma * (gamma * sigmoid(u) * softplus(-u) + sigmoid(-u))
    return (grad * reduction_scale(reduction, z.size)).astype(dtype, copy=False)
