"""Softmax and its relatives, computed so that they never overflow.

The functions here are the building blocks of every loss in ``ce_lib``.
Each one subtracts the maximum (or splits on the sign) before it
exponentiates, so that ``exp`` only ever sees numbers ``<= 0`` and cannot
overflow; the results are the exact mathematical values, not approximations.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import as_float_array, normalize_axis

__all__ = [
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "sigmoid",
    "softmax",
    "softmax_jacobian",
    "softplus",
]


def _shifted_exp(x: NDArray, axis: int) -> tuple[NDArray, NDArray]:
    """Return ``(exp(x - m), m)`` with ``m`` the maximum along ``axis`` (kept).

    A slice whose maximum is not finite (all ``-inf``, or containing ``+inf``
    or NaN) is shifted by 0 instead, so that ``-inf - (-inf)`` never makes a
    NaN out of an all ``-inf`` slice.
    """
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.exp(x - m), m


def _logsumexp_parts(a: NDArray, axis: int) -> tuple[NDArray, NDArray]:
    """Return ``(m, t)`` with ``LSE(a) = m + t`` along ``axis`` (both kept).

    ``m`` is the maximum (0 for a slice whose maximum is not finite) and
    ``t = log1p(sum of exp(a_i - m) over all entries but one maximal one)``.
    Keeping the two parts apart lets :func:`log_softmax` compute
    ``(a - m) - t`` without the cancellation of ``a - (m + t)``.
    """
    e, m = _shifted_exp(a, axis)
    # Take the largest term (exp(0) = 1 for a finite maximum) out of the sum
    # and add it back exactly with log1p.
    k = np.argmax(a, axis=axis, keepdims=True)
    largest = np.take_along_axis(e, k, axis=axis)
    np.put_along_axis(e, k, 0.0, axis=axis)
    rest = np.sum(e, axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        # largest is 1 where m is finite; 0 (all -inf), inf or NaN otherwise.
        t = np.where(largest == 1, np.log1p(rest), np.log(largest + rest))
    return m, t


def logsumexp(x: ArrayLike, axis: int = -1, keepdims: bool = False) -> NDArray:
    r"""Log of the sum of exponentials along ``axis``.

    .. math::

        \operatorname{LSE}(x) = \log \sum_i e^{x_i}
                              = m + \log\Bigl(1 + \sum_{i \ne k} e^{x_i - m}\Bigr),
        \qquad m = x_k = \max_i x_i .

    The second form is what is computed: no exponential can overflow, and
    ``log1p`` keeps the tiny contributions of the other entries
    (``logsumexp([0, -40])`` is ``4.248e-18``, not ``0``).

    Parameters
    ----------
    x : array_like
        Input values.
    axis : int, default -1
        Axis to reduce.
    keepdims : bool, default False
        Keep the reduced axis with length one.

    Returns
    -------
    ndarray
        ``max(x) < LSE(x) <= max(x) + log n``. An all ``-inf`` slice gives
        ``-inf``, a slice containing ``+inf`` gives ``+inf``, NaN propagates,
        and an empty slice gives ``-inf`` (the log of an empty sum).
    """
    a, dtype = as_float_array(x, "x")
    ax = normalize_axis(axis, a.ndim)
    if a.shape[ax] == 0:
        shape = list(a.shape)
        shape[ax] = 1
        out = np.full(shape, -np.inf, dtype=dtype)
    else:
        m, t = _logsumexp_parts(a, ax)
        out = (m + t).astype(dtype, copy=False)
    return out if keepdims else np.squeeze(out, axis=ax)


def softmax(x: ArrayLike, axis: int = -1) -> NDArray:
    r"""Softmax along ``axis``.

    .. math::

        \operatorname{softmax}(x)_i = \frac{e^{x_i}}{\sum_k e^{x_k}}
                                   = \frac{e^{x_i - m}}{\sum_k e^{x_k - m}},
        \qquad m = \max_k x_k .

    Parameters
    ----------
    x : array_like
        Logits.
    axis : int, default -1
        The class axis.

    Returns
    -------
    ndarray
        Same shape and floating dtype as ``x``; entries in ``[0, 1]`` that sum
        to one along ``axis``. A ``-inf`` entry gets probability exactly 0. A
        slice whose entries are all ``-inf`` has no softmax (0/0); its output
        is NaN, as in PyTorch.
    """
    a, dtype = as_float_array(x, "x")
    ax = normalize_axis(axis, a.ndim)
    e, _ = _shifted_exp(a, ax)
    with np.errstate(invalid="ignore"):
        return (e / np.sum(e, axis=ax, keepdims=True)).astype(dtype, copy=False)


def log_softmax(x: ArrayLike, axis: int = -1) -> NDArray:
    r"""Logarithm of the softmax along ``axis``.

    .. math::

        \log \operatorname{softmax}(x)_i = x_i - \operatorname{LSE}(x).

    Computed as :math:`(x_i - m) - \log(1 + \sum_{i \ne k} e^{x_i - m})` with
    :math:`m = x_k = \max x`, never as ``log(softmax(x))``: a probability that
    underflows to 0 still has a finite log, and the largest class keeps full
    relative accuracy.

    Parameters
    ----------
    x : array_like
        Logits.
    axis : int, default -1
        The class axis.

    Returns
    -------
    ndarray
        Same shape and floating dtype as ``x``; all entries ``<= 0``.
    """
    a, dtype = as_float_array(x, "x")
    ax = normalize_axis(axis, a.ndim)
    if a.shape[ax] == 0:
        return a.astype(dtype, copy=True)
    m, t = _logsumexp_parts(a, ax)
    with np.errstate(invalid="ignore"):
        return ((a - m) - t).astype(dtype, copy=False)


def softmax_jacobian(x: ArrayLike) -> NDArray:
    r"""Jacobian of the softmax over the last axis.

    .. math::

        J_{ij} = \frac{\partial s_i}{\partial x_j} = s_i(\delta_{ij} - s_j),
        \qquad J = \operatorname{diag}(s) - s s^\top .

    Parameters
    ----------
    x : array_like, shape (..., C)
        Logits; any leading dimensions are a batch.

    Returns
    -------
    ndarray, shape (..., C, C)
        Symmetric, positive semi-definite, with the all-ones vector in its
        null space. This is a teaching tool: it costs ``C**2`` memory per row,
        and no loss in ``ce_lib`` uses it.
    """
    a, dtype = as_float_array(x, "x")
    s = softmax(a, axis=-1)
    eye = np.eye(s.shape[-1], dtype=s.dtype)
    jac = s[..., :, None] * eye - s[..., :, None] * s[..., None, :]
    return jac.astype(dtype, copy=False)


def sigmoid(x: ArrayLike) -> NDArray:
    r"""Logistic sigmoid, elementwise.

    .. math::

        \sigma(x) = \frac{1}{1 + e^{-x}}
                  = \begin{cases} 1/(1 + e^{-|x|}) & x \ge 0 \\
                                  e^{-|x|}/(1 + e^{-|x|}) & x < 0 \end{cases}

    Only ``e^{-|x|} <= 1`` is ever computed, so nothing overflows.

    Parameters
    ----------
    x : array_like
        Input values (any shape).

    Returns
    -------
    ndarray
        Same shape and floating dtype as ``x``, in ``[0, 1]``.
    """
    a, dtype = as_float_array(x, "x")
    e = np.exp(-np.abs(a))
    out = np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return out.astype(dtype, copy=False)


def softplus(x: ArrayLike) -> NDArray:
    r"""Softplus, the smooth ReLU, elementwise.

    .. math::

        \operatorname{softplus}(x) = \log(1 + e^{x}) = \max(x, 0) + \log(1 + e^{-|x|}).

    Parameters
    ----------
    x : array_like
        Input values (any shape).

    Returns
    -------
    ndarray
        Same shape and floating dtype as ``x``; ``softplus(x) > max(x, 0)``
        and ``softplus(x) - max(x, 0) <= log 2``.
    """
    a, dtype = as_float_array(x, "x")
    out = np.maximum(a, 0) + np.log1p(np.exp(-np.abs(a)))
    return out.astype(dtype, copy=False)


def log_sigmoid(x: ArrayLike) -> NDArray:
    r"""Log of the sigmoid, elementwise.

    .. math::

        \log \sigma(x) = -\operatorname{softplus}(-x) = \min(x, 0) - \log(1 + e^{-|x|}).

    Parameters
    ----------
    x : array_like
        Input values (any shape).

    Returns
    -------
    ndarray
        Same shape and floating dtype as ``x``; finite for every finite ``x``
        (``log_sigmoid(-1000) == -1000``).
    """
    a, dtype = as_float_array(x, "x")
    out = np.minimum(a, 0) - np.log1p(np.exp(-np.abs(a)))
    return out.astype(dtype, copy=False)
