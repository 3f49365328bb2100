"""Margin losses on cosine logits: NormFace, AM-Softmax/CosFace and ArcFace.

Normalise both the features and the class weights, and the logits become
cosines of angles, bounded in ``[-1, 1]``; a scale ``s`` turns them back into
usable logits (NormFace). A margin ``m`` then asks the target class to win by
more than a tie: subtracted from the cosine (AM-Softmax, CosFace) or added to
the angle (ArcFace). Each loss is :func:`~ce_lib.categorical.cross_entropy` on modified
logits, and its gradient is the chain rule through that modification.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import as_float_array, check_class_target, check_reduction, normalize_axis
from .categorical import cross_entropy, cross_entropy_grad

__all__ = [
    "am_softmax_loss",
    "am_softmax_loss_grad",
    "arcface_loss",
    "arcface_loss_grad",
    "cosine_logits",
    "cosine_logits_grad",
]


def _unit_rows(a: NDArray, name: str) -> tuple[NDArray, NDArray]:
    norms = np.linalg.norm(a, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"{name} has a row of zeros, which has no direction to normalise")
    return a / norms, norms


def _check_stacks(features: ArrayLike, weights: ArrayLike) -> tuple[NDArray, NDArray, np.dtype]:
    """Features (..., N, d) and weights (..., C, d): the same d and the same leading (batch) shape."""
    h, dtype = as_float_array(features, "features")
    w, _ = as_float_array(weights, "weights")
    if h.ndim < 2 or h.ndim != w.ndim or h.shape[:-2] != w.shape[:-2] or h.shape[-1] != w.shape[-1]:
        raise ValueError(
            "features must be (..., N, d) and weights (..., C, d) with the same d and the same "
            f"leading shape; got features.shape={h.shape} and weights.shape={w.shape}"
        )
    return h, w.astype(h.dtype, copy=False), dtype


def cosine_logits(features: ArrayLike, weights: ArrayLike) -> NDArray:
    r"""Cosines between every feature vector and every class weight vector.

    Course: :prf:ref:`mg-def-cosine` in :doc:`/book/part2/margins`.

    .. math::  \cos\theta_{nc} = \frac{h_n^\top w_c}{\lVert h_n \rVert\, \lVert w_c \rVert}

    Parameters
    ----------
    features : array_like, shape (..., N, d)
        Feature vectors :math:`h_n` (non-zero).
    weights : array_like, shape (..., C, d)
        Class weight vectors :math:`w_c` (non-zero). Leading dimensions, if
        any, must equal those of ``features``: each is an independent model
        (e.g. one per random seed), computed in one call.

    Returns
    -------
    ndarray, shape (..., N, C)
        Values in :math:`[-1, 1]`.
    """
    h, w, dtype = _check_stacks(features, weights)
    u, _ = _unit_rows(h, "features")
    v, _ = _unit_rows(w, "weights")
    return np.clip(u @ np.swapaxes(v, -1, -2), -1.0, 1.0).astype(dtype, copy=False)


def cosine_logits_grad(
    features: ArrayLike, weights: ArrayLike, upstream: ArrayLike
) -> tuple[NDArray, NDArray]:
    r"""Back-propagate a gradient through :func:`cosine_logits`.

    Course: equation :eq:`mg-dcos` in :doc:`/book/part2/margins`, the gradient with respect to
    the features; the chapter gives no equation for the weight gradient (the same formula with
    the roles of :math:`h` and :math:`w_c` exchanged), and checks it only numerically.

    With :math:`u = h/\lVert h\rVert`, :math:`v = w/\lVert w\rVert` and
    :math:`G = \partial L/\partial \cos\theta` (shape ``(N, C)``),

    .. math::

        \frac{\partial L}{\partial h_n} = \frac{(I - u_n u_n^\top)\, \sum_c G_{nc} v_c}{\lVert h_n \rVert},
        \qquad
        \frac{\partial L}{\partial w_c} = \frac{(I - v_c v_c^\top)\, \sum_n G_{nc} u_n}{\lVert w_c \rVert}.

    The projection :math:`I - uu^\top` removes the radial part: a cosine
    does not change when a vector is rescaled.

    Parameters
    ----------
    features : array_like, shape (..., N, d)
        Feature vectors, as given to :func:`cosine_logits`.
    weights : array_like, shape (..., C, d)
        Class weight vectors, as given to :func:`cosine_logits`.
    upstream : array_like, shape (..., N, C)
        :math:`\partial L / \partial \cos\theta`, e.g. from :func:`am_softmax_loss_grad`.

    Returns
    -------
    (ndarray, ndarray)
        Gradients with respect to ``features`` and ``weights``.
    """
    h, w, dtype = _check_stacks(features, weights)
    g, _ = as_float_array(upstream, "upstream")
    expected = (*h.shape[:-1], w.shape[-2])
    if g.shape != expected:
        raise ValueError(f"upstream must have shape (..., N, C) = {expected}; got {g.shape}")
    u, h_norm = _unit_rows(h, "features")
    v, w_norm = _unit_rows(w, "weights")
    toward_u = g @ v  # (..., N, d): sum_c G_nc v_c
    toward_v = np.swapaxes(g, -1, -2) @ u  # (..., C, d): sum_n G_nc u_n
    grad_h = (toward_u - np.sum(toward_u * u, axis=-1, keepdims=True) * u) / h_norm
    grad_w = (toward_v - np.sum(toward_v * v, axis=-1, keepdims=True) * v) / w_norm
    return grad_h.astype(dtype, copy=False), grad_w.astype(dtype, copy=False)


def _margin_inputs(
    cosines: ArrayLike, target: ArrayLike, s: float, m: float, axis: int, reduction: str
) -> tuple[NDArray, NDArray, NDArray, int, np.dtype]:
    """Cosines (class axis last), labels, one-hot mask, axis, dtype."""
    c, dtype = as_float_array(cosines, "cosines")
    ax = normalize_axis(axis, c.ndim)
    check_reduction(reduction)
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"s must be a positive scale; got {s!r}")
    if not np.isfinite(m):
        raise ValueError(f"m must be a finite margin; got {m!r}")
    if np.any(np.abs(c) > 1 + 1e-6):  # a NaN is not rejected: it makes its row NaN
        bad = c[np.abs(c) > 1 + 1e-6].flat[0]
        raise ValueError(f"cosines must lie in [-1, 1]; found {float(bad)} (use cosine_logits)")
    if c.shape[ax] == 0:
        raise ValueError(f"cosines has an empty class axis (axis={axis}, shape {c.shape})")
    c = np.moveaxis(c, ax, -1)
    y = check_class_target(target, c.shape[:-1], c.shape[-1])
    onehot = np.arange(c.shape[-1]) == y[..., None]
    return c, y, onehot, ax, dtype


def am_softmax_loss(
    cosines: ArrayLike,
    target: ArrayLike,
    *,
    s: float = 30.0,
    m: float = 0.35,
    axis: int = -1,
    reduction: str = "mean",
) -> NDArray:
    r"""Additive-margin softmax (AM-Softmax, CosFace) on cosine logits.

    Course: :prf:ref:`mg-def-am`, equation :eq:`mg-am`, in :doc:`/book/part2/margins`.

    .. math::

        \ell_n = -\log \frac{e^{s(\cos\theta_{y} - m)}}
                 {e^{s(\cos\theta_{y} - m)} + \sum_{j \ne y} e^{s \cos\theta_j}},

    i.e. :func:`~ce_lib.categorical.cross_entropy` on the logits :math:`s(\cos\theta - m\,e_y)`.
    It is the hinge :math:`\max(\max_{j\ne y} \cos\theta_j - \cos\theta_y + m, 0)`
    smoothed with log-sum-exp and softplus, exactly as plain cross-entropy
    smooths the margin-free hinge. Defaults are the AM-Softmax paper's.

    Parameters
    ----------
    cosines : array_like, shape (..., C, ...)
        :math:`\cos\theta`, in :math:`[-1, 1]` (see :func:`cosine_logits`); a NaN
        makes its row NaN.
    target : array_like of int
        Class indices, shape of ``cosines`` without the class axis.
    s : float, default 30.0
        Scale (positive).
    m : float, default 0.35
        Additive cosine margin.
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
    c, y, onehot, _, dtype = _margin_inputs(cosines, target, s, m, axis, reduction)
    return cross_entropy(s * (c - m * onehot), y, reduction=reduction).astype(dtype)


def am_softmax_loss_grad(
    cosines: ArrayLike,
    target: ArrayLike,
    *,
    s: float = 30.0,
    m: float = 0.35,
    axis: int = -1,
    reduction: str = "mean",
) -> NDArray:
    r"""Gradient of :func:`am_softmax_loss` with respect to the cosines.

    Course: :prf:ref:`mg-thm-grad`, equation :eq:`mg-grad`, in :doc:`/book/part2/margins`.

    .. math::  \frac{\partial \ell}{\partial \cos\theta} = s\,(p - e_y),
               \qquad p = \operatorname{softmax}\bigl(s(\cos\theta - m e_y)\bigr).

    Parameters
    ----------
    cosines, target, s, m, axis, reduction
        As for :func:`am_softmax_loss`.

    Returns
    -------
    ndarray
        Same shape and dtype as ``cosines``.
    """
    c, y, onehot, ax, dtype = _margin_inputs(cosines, target, s, m, axis, reduction)
    grad = s * cross_entropy_grad(s * (c - m * onehot), y, reduction=reduction)
    return np.moveaxis(grad, -1, ax).astype(dtype, copy=False)


# The largest float64 cosine below 1 and its angle (about 1.5e-8 rad): the smallest angle a float64
# cosine can express. At cos(theta) = 1 exactly, d cos(theta + m) / d cos(theta) is infinite and
# arcface_loss_grad uses its value at this angle instead (the one place where it is not exact).
_COS_BELOW_1 = float(np.nextafter(1.0, 0.0))
_THETA_MIN = float(np.arccos(_COS_BELOW_1))
_SIN_MIN = float(np.sqrt((1.0 - _COS_BELOW_1) * (1.0 + _COS_BELOW_1)))


def _arc_target(c_y: NDArray, m: float, easy_margin: bool = False) -> tuple[NDArray, NDArray]:
    r"""ArcFace's target cosine :math:`\phi(c)` and its derivative :math:`\phi'(c)`.

    Both are computed through the angle :math:`\theta = \arccos c`:
    :math:`\phi = \cos(\theta + m)` and

    .. math::  \phi'(c) = \frac{\sin(\theta + m)}{\sin\theta}
               = \cos m + \frac{\cos\theta\,\sin m}{\sin\theta},

    with :math:`\sin\theta = \sqrt{(1 - c)(1 + c)}`, which is accurate to a few
    units in the last place for every float ``c`` (``1 - c`` is exact near 1,
    where ``1 - c**2`` would lose the leading digits). The derivative is exact
    for every cosine below 1 and grows like :math:`\sin m/\theta` as
    :math:`\theta \to 0`; at :math:`c = 1` (:math:`\theta = 0`, and also for
    rounding overshoots :math:`1 < c \le 1 + 10^{-6}`, which are treated as 1)
    it is infinite, and its value at the smallest angle a float64 cosine can
    express, :math:`\theta \approx 1.5\times 10^{-8}` (the largest float below
    1), is used instead: about :math:`3\times 10^{7}` for :math:`m = 0.5`.

    Where the curve would stop being a margin, it is replaced as in the
    reference implementation (``easy_margin`` there):

    * ``easy_margin=False``: :math:`\cos(\theta + m)` turns back up beyond
      :math:`\theta = \pi - m`, so for :math:`c \le \cos(\pi - m)` the target
      continues with the monotone line :math:`c - m \sin m` (derivative 1). The
      line does not meet the curve: at :math:`\theta = \pi - m` it jumps by
      :math:`1 - \cos m - m \sin m` (:math:`-0.117` for :math:`m = 0.5`).
    * ``easy_margin=True``: the margin is applied only where :math:`c > 0`
      (:math:`\theta < \pi/2`); elsewhere the target is :math:`c` itself
      (derivative 1), no margin at all. The target then jumps *up* by
      :math:`\sin m` at :math:`\theta = \pi/2`.
    """
    c = np.clip(c_y, -1.0, 1.0)
    theta = np.arccos(c)
    sin_theta = np.sqrt((1.0 - c) * (1.0 + c))
    phi = np.cos(theta + m)
    pole = sin_theta == 0.0  # theta = 0 or pi: the derivative is infinite (or 0/0)
    theta_d = np.where(pole, np.where(c > 0, _THETA_MIN, np.pi - _THETA_MIN), theta)
    dphi = np.sin(theta_d + m) / np.where(pole, _SIN_MIN, sin_theta)
    if easy_margin:
        on_arc = c > 0.0
        fallback = c_y
    else:
        on_arc = c > np.cos(np.pi - m)  # theta + m < pi
        fallback = c_y - m * np.sin(m)
    return np.where(on_arc, phi, fallback), np.where(on_arc, dphi, 1.0)


def arcface_loss(
    cosines: ArrayLike,
    target: ArrayLike,
    *,
    s: float = 64.0,
    m: float = 0.5,
    easy_margin: bool = False,
    axis: int = -1,
    reduction: str = "mean",
) -> NDArray:
    r"""Additive angular margin loss (ArcFace) on cosine logits.

    Course: :prf:ref:`mg-def-arcface`, equation :eq:`mg-arcface`, in :doc:`/book/part2/margins`.

    .. math::

        \ell_n = -\log \frac{e^{s \cos(\theta_y + m)}}
                 {e^{s \cos(\theta_y + m)} + \sum_{j \ne y} e^{s \cos\theta_j}},

    with the margin added to the *angle* of the target class, computed through
    :math:`\theta_y = \arccos(\cos\theta_y)`. Where :math:`\theta_y + m > \pi`
    the target logit continues linearly as :math:`s(\cos\theta_y - m \sin m)`
    (as in the reference implementation; the line jumps below the curve at
    :math:`\theta_y = \pi - m`); with ``easy_margin=True`` the margin is
    applied only where :math:`\cos\theta_y > 0` and the target logit is
    :math:`s\cos\theta_y` elsewhere. Defaults are the ArcFace paper's.

    Parameters
    ----------
    cosines : array_like, shape (..., C, ...)
        :math:`\cos\theta`, in :math:`[-1, 1]`; a NaN makes its row NaN.
    target : array_like of int
        Class indices, shape of ``cosines`` without the class axis.
    s : float, default 64.0
        Scale (positive).
    m : float, default 0.5
        Angular margin in radians.
    easy_margin : bool, default False
        ``False``: beyond :math:`\theta_y = \pi - m` use the line
        :math:`\cos\theta_y - m\sin m`. ``True``: use :math:`\cos(\theta_y + m)`
        only where :math:`\cos\theta_y > 0`, and :math:`\cos\theta_y` (no
        margin) elsewhere. Both names follow the reference implementation.
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
    c, y, onehot, _, dtype = _margin_inputs(cosines, target, s, m, axis, reduction)
    phi, _ = _arc_target(c, m, easy_margin)
    return cross_entropy(s * np.where(onehot, phi, c), y, reduction=reduction).astype(dtype)


def arcface_loss_grad(
    cosines: ArrayLike,
    target: ArrayLike,
    *,
    s: float = 64.0,
    m: float = 0.5,
    easy_margin: bool = False,
    axis: int = -1,
    reduction: str = "mean",
) -> NDArray:
    r"""Gradient of :func:`arcface_loss` with respect to the cosines.

    Course: :prf:ref:`mg-thm-grad`, equation :eq:`mg-grad`, with :eq:`mg-arc-dphi`, in
    :doc:`/book/part2/margins`.

    .. math::

        \frac{\partial \ell}{\partial \cos\theta_j} = s\,(p_j - [j = y])\cdot
        \begin{cases} \phi'(\cos\theta_y) = \dfrac{\sin(\theta_y + m)}{\sin\theta_y} & j = y \\
                      1 & j \ne y \end{cases}

    on the arc, and :math:`\phi' = 1` on the fallback (see ``easy_margin``).
    :math:`\phi'` is exact for every target cosine below 1, however close
    (it grows like :math:`\sin m/\theta_y`); it is infinite at
    :math:`\cos\theta_y = 1`, where its value at the largest float64 cosine
    below 1 (:math:`\theta_y \approx 1.5\times 10^{-8}`) is returned instead.
    Chained through :func:`cosine_logits_grad`, whose factor
    :math:`\lVert(I - uu^\top)v_y\rVert = \sin\theta_y` cancels the
    :math:`1/\sin\theta_y`, the gradient with respect to the feature stays
    finite, of size :math:`s(1 - p_y)\sin(\theta_y + m)/\lVert h\rVert`.

    Parameters
    ----------
    cosines, target, s, m, easy_margin, axis, reduction
        As for :func:`arcface_loss`.

    Returns
    -------
    ndarray
        Same shape and dtype as ``cosines``.
    """
    c, y, onehot, ax, dtype = _margin_inputs(cosines, target, s, m, axis, reduction)
    phi, dphi = _arc_target(c, m, easy_margin)
    grad = s * cross_entropy_grad(s * np.where(onehot, phi, c), y, reduction=reduction)
    grad = grad * np.where(onehot, dphi, 1.0)
    return np.moveaxis(grad, -1, ax).astype(dtype, copy=False)
