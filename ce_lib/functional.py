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


def shift_by_max(x: NDArray, axis: int) -> tuple[NDArray, NDArray]:
    """Return ``(x - m, m)`` with ``m`` the largest finite entry along ``axis`` (kept).

    The first step of every shift-invariant function in ``ce_lib`` (softmax,
    log-softmax, cross-entropy, ...): afterwards every finite entry is ``<= 0``,
    so ``exp`` cannot overflow, and a constant ``c`` added to the slice cancels
    here, exactly, before any other arithmetic, when ``x + c`` is exact (e.g.
    logits on a grid). A slice with no finite entry is
    shifted by 0, so that ``-inf - (-inf)`` never makes a NaN; ``+inf`` and NaN
    entries stay what they are.
    """
    finite = np.where(np.isfinite(x), x, -np.inf)
    m = np.max(finite, axis=axis, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0).astype(x.dtype)
    return x - m, m


def undefined_slices(x: NDArray, axis: int) -> NDArray:
    """Slices along ``axis`` (kept) that have no softmax: a ``+inf`` or NaN entry, or all ``-inf``.

    PyTorch returns NaN for every output of such a slice, and so does ``ce_lib``.
    """
    return ~np.isfinite(np.max(x, axis=axis, keepdims=True, initial=-np.inf))


def sum_of_others(v: NDArray, axis: int) -> NDArray:
    """``sum_{k != c} v_k`` for every ``c`` along ``axis``, for ``v >= 0``, without cancellation.

    ``total - v_c`` is accurate wherever ``v_c`` is at most half the total; only
    the largest entry can be more, and there the sum of the others is computed
    directly. With ``v = softmax(z)`` this is ``1 - p_c``, accurate even when
    ``p_c`` rounds to 1.
    """
    k = np.argmax(v, axis=axis, keepdims=True)
    rest = v.copy()
    np.put_along_axis(rest, k, 0, axis=axis)
    rest_sum = np.sum(rest, axis=axis, keepdims=True)
    out = rest_sum + np.take_along_axis(v, k, axis=axis) - v
    np.put_along_axis(out, k, rest_sum, axis=axis)
    return out


def times_or_zero(coefficient: ArrayLike, value: ArrayLike) -> NDArray:
    """``coefficient * value``, with a zero coefficient giving exactly 0 even where ``value`` is infinite.

    A term with coefficient 0 is absent from the sum (``0 log 0 = 0``): a class
    of probability 0 at a ``-inf`` logit, an ignored target, a zero weight.
    NaN values stay NaN.
    """
    c, v = np.asarray(coefficient), np.asarray(value)
    with np.errstate(invalid="ignore"):
        return np.where((c == 0) & ~np.isnan(v), 0, c * v)


def shifted_rows(z: NDArray) -> tuple[NDArray, NDArray]:
    """:func:`shift_by_max` along the last axis, with the rows that have no softmax set to NaN.

    Returns ``(z - max(z), bad)``, where ``bad`` (shape ``z.shape[:-1]``) marks
    the rows of :func:`undefined_slices` (a ``+inf`` or NaN entry, or all
    ``-inf``), which come back all NaN. ``-inf`` entries of the other rows stay
    ``-inf``: a class of probability 0, a competitor that is not there. The
    first step of the losses of the hinge family, focal, sparsemax, entmax,
    the z-loss and distillation.
    """
    d, _ = shift_by_max(z, -1)
    bad = undefined_slices(z, -1)
    return np.where(bad, np.nan, d), bad[..., 0]


def _shifted_exp(x: NDArray, axis: int) -> tuple[NDArray, NDArray]:
    """Return ``(exp(x - m), m)`` with ``(x - m, m) = shift_by_max(x)``."""
    d, m = shift_by_max(x, axis)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.exp(d), m


def _logsumexp_parts(a: NDArray, axis: int) -> tuple[NDArray, NDArray, NDArray]:
    """Return ``(a - m, m, t)`` with ``LSE(a) = m + t`` along ``axis`` (``m``, ``t`` kept).

    ``m`` comes from :func:`shift_by_max` and
    ``t = log1p(sum of exp(a_i - m) over all entries but one maximal one)``.
    Keeping the parts apart lets :func:`log_softmax` compute ``(a - m) - t``
    without the cancellation of ``a - (m + t)``.
    """
    d, m = shift_by_max(a, axis)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(d)
    # Take the largest term (exp(0) = 1 for a finite maximum) out of the sum
    # and add it back exactly with log1p.
    k = np.argmax(d, axis=axis, keepdims=True)
    largest = np.take_along_axis(e, k, axis=axis)
    np.put_along_axis(e, k, 0.0, axis=axis)
    rest = np.sum(e, axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        # largest is 1 where m is finite; 0 (all -inf), inf or NaN otherwise.
        t = np.where(largest == 1, np.log1p(rest), np.log(largest + rest))
    return d, m, t


def _class_array(x: ArrayLike, axis: int) -> tuple[NDArray, np.dtype, int]:
    """``(array to compute with, result dtype, class axis)``; a 0-d input is one class (axis 0 or -1)."""
    a, dtype = as_float_array(x, "x")
    if a.ndim == 0:
        normalize_axis(axis, 1)  # a scalar is a slice of one class, as in PyTorch
        return a.reshape(1), dtype, 0
    return a, dtype, normalize_axis(axis, a.ndim)


def logsumexp(x: ArrayLike, axis: int = -1, keepdims: bool = False) -> NDArray:
    r"""Log of the sum of exponentials along ``axis``.

    Course: :prf:ref:`sm-def-lse`, equation :eq:`sm-lse`, in :doc:`/book/part1/softmax`; evaluated as
    :eq:`st-eq-lse-log1p` in :doc:`/book/part2/stability`.

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
        ``max(x) <= LSE(x) <= max(x) + log n``, with equality on the left (in
        exact arithmetic) only when one entry is finite. An all ``-inf`` slice gives
        ``-inf``, a slice containing ``+inf`` gives ``+inf``, NaN propagates,
        and an empty slice gives ``-inf`` (the log of an empty sum), all as in
        PyTorch. A 0-d ``x`` is one element: ``logsumexp(x) == x``.
    """
    a, dtype, ax = _class_array(x, axis)
    if a.shape[ax] == 0:
        shape = list(a.shape)
        shape[ax] = 1
        out = np.full(shape, -np.inf, dtype=dtype)
    else:
        _, m, t = _logsumexp_parts(a, ax)
        out = (m + t).astype(dtype, copy=False)
    if np.ndim(x) == 0:
        return out.reshape(())
    return out if keepdims else np.squeeze(out, axis=ax)


def softmax(x: ArrayLike, axis: int = -1) -> NDArray:
    r"""Softmax along ``axis``.

    Course: :prf:ref:`sm-def-softmax`, equation :eq:`sm-softmax`, in :doc:`/book/part1/softmax`, computed
    with the max shift :eq:`sm-max-shift`.

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
        slice whose entries are all ``-inf`` has no softmax (0/0), and a
        ``+inf`` or NaN logit makes its slice NaN: the output is NaN there, as
        in PyTorch. A 0-d ``x`` is one class (``axis`` 0 or -1): its softmax is 1.
    """
    a, dtype, ax = _class_array(x, axis)
    e, _ = _shifted_exp(a, ax)
    with np.errstate(invalid="ignore"):
        p = e / np.sum(e, axis=ax, keepdims=True)
    p = np.where(undefined_slices(a, ax), np.nan, p)
    return p.astype(dtype, copy=False).reshape(np.shape(x))


def log_softmax(x: ArrayLike, axis: int = -1) -> NDArray:
    r"""Logarithm of the softmax along ``axis``.

    Course: :prf:ref:`st-def-lse`, equation :eq:`st-eq-logsoftmax`, in :doc:`/book/part2/stability`.

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
        Same shape and floating dtype as ``x``; all entries ``<= 0``. As for
        :func:`softmax`, a slice that is all ``-inf`` or has a ``+inf`` or NaN
        entry is NaN, and a 0-d ``x`` is one class (its log-softmax is 0).
    """
    a, dtype, ax = _class_array(x, axis)
    if a.shape[ax] == 0:
        return a.astype(dtype, copy=True)
    d, _, t = _logsumexp_parts(a, ax)
    with np.errstate(invalid="ignore"):
        out = np.where(undefined_slices(a, ax), np.nan, d - t)
    return out.astype(dtype, copy=False).reshape(np.shape(x))


def softmax_jacobian(x: ArrayLike) -> NDArray:
    r"""Jacobian of the softmax over the last axis.

    Course: :prf:ref:`sm-thm-jacobian`, equation :eq:`sm-jacobian`, in :doc:`/book/part1/softmax`.

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

    Course: :prf:ref:`mse-def-unit` in :doc:`/book/part1/mse_vs_ce`; a two-class softmax by
    :prf:ref:`ce-thm-binary`, equation :eq:`ce-eq-binary-as-softmax`, in :doc:`/book/part1/cross_entropy`.

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

    Course: :prf:ref:`hs-thm-softplus`, equation :eq:`hs-softplus`, in
    :doc:`/book/part1/hinge_to_softmax`.

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

    Course: equation :eq:`st-eq-logsigmoid` in :doc:`/book/part2/stability`.

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
