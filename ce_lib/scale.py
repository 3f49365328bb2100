"""Cross-entropy at scale: streaming log-sum-exp and linear cross-entropy without the logits.

With a vocabulary of ``V`` = 32k–256k classes and ``N`` tokens, the logits of a
language model's last layer are an ``N x V`` array that may not fit in memory
(8192 tokens x 128256 classes in float32 is 3.9 GiB, and its gradient as much
again). Two tools avoid it:

* :func:`online_logsumexp` computes ``LSE`` over chunks of the class axis with
  the associative merge of ``(max, rescaled sum)`` pairs (Milakov &
  Gimelshein, arXiv 1805.02867), the same rule that FlashAttention uses;
* :func:`linear_cross_entropy` and :func:`linear_cross_entropy_grad` compute
  the loss of ``logits = h W^T + b`` and its gradients with respect to ``h``,
  ``W`` and ``b`` chunk by chunk of tokens, so that only ``chunk x V`` logits
  ever exist at once. :func:`linear_cross_entropy_reference` is the same
  computation with the logits materialised, for tests and comparisons.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._fastpath import _ce_rows
from ._validation import as_float_array, check_class_target, check_reduction, normalize_axis
from .categorical import cross_entropy_value_and_grad

__all__ = [
    "linear_cross_entropy",
    "linear_cross_entropy_grad",
    "linear_cross_entropy_reference",
    "linear_cross_entropy_value_and_grad",
    "lse_finalize",
    "lse_merge",
    "lse_pair",
    "online_logsumexp",
]


# --------------------------------------------------------------------------
# Online log-sum-exp
# --------------------------------------------------------------------------


def lse_pair(x: ArrayLike, axis: int = -1) -> tuple[NDArray, NDArray]:
    r"""The ``(m, d)`` pair of a chunk: its maximum and the sum of ``exp(x - m)``.

    Course: :prf:ref:`sc-def-pair`, equation :eq:`sc-pair`, in :doc:`/book/part2/scale`.

    .. math::  m = \max_i x_i, \qquad d = \sum_i e^{x_i - m}, \qquad \operatorname{LSE}(x) = m + \log d .

    An empty or all ``-inf`` chunk gives the neutral pair ``(-inf, 0)``. A
    chunk whose maximum is ``+inf`` or NaN keeps ``m`` finite (0) and lets
    ``d`` carry the ``inf`` or NaN, so that it propagates through merges.

    Parameters
    ----------
    x : array_like
        A chunk of values.
    axis : int, default -1
        The axis to reduce.

    Returns
    -------
    (ndarray, ndarray)
        ``m`` and ``d``, with the shape of ``x`` without ``axis``, float64 or
        the floating dtype of ``x``.
    """
    a, _ = as_float_array(x, "x")
    ax = normalize_axis(axis, a.ndim)
    if a.shape[ax] == 0:
        shape = a.shape[:ax] + a.shape[ax + 1 :]
        return np.full(shape, -np.inf, dtype=a.dtype), np.zeros(shape, dtype=a.dtype)
    m = np.max(a, axis=ax)
    shift = np.where(np.isfinite(m), m, 0).astype(a.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        d = np.sum(np.exp(a - np.expand_dims(shift, ax)), axis=ax)
    m = np.where(m == -np.inf, m, shift)  # all -inf: keep (-inf, 0), the neutral pair
    return m, d


def lse_merge(p: tuple[NDArray, NDArray], q: tuple[NDArray, NDArray]) -> tuple[NDArray, NDArray]:
    r"""Merge the pairs of two chunks into the pair of their union.

    Course: :prf:ref:`sc-thm-merge`, equation :eq:`sc-merge`, in :doc:`/book/part2/scale`.

    .. math::

        (m_1, d_1) \oplus (m_2, d_2) = \bigl(M,\; d_1 e^{m_1 - M} + d_2 e^{m_2 - M}\bigr),
        \qquad M = \max(m_1, m_2).

    The operation is associative and commutative with neutral element
    ``(-inf, 0)``, so chunks may be merged in any grouping and any order (in
    parallel, as a tree); each factor ``e^{m_k - M}`` is at most 1, so nothing
    overflows.

    Parameters
    ----------
    p, q : (ndarray, ndarray)
        Pairs from :func:`lse_pair` or from earlier merges (broadcastable).

    Returns
    -------
    (ndarray, ndarray)
        The merged pair.
    """
    (m1, d1), (m2, d2) = p, q
    big = np.maximum(m1, m2)
    shift = np.where(np.isfinite(big), big, 0)  # both -inf: d1 = d2 = 0 anyway
    with np.errstate(invalid="ignore"):
        d = d1 * np.exp(m1 - shift) + d2 * np.exp(m2 - shift)
    return big, d


def lse_finalize(p: tuple[NDArray, NDArray]) -> NDArray:
    """``LSE = m + log d`` of a pair (``-inf`` for the neutral pair).

    Course: :prf:ref:`sc-def-pair`, equation :eq:`sc-pair`, in :doc:`/book/part2/scale`.
    """
    m, d = p
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m == -np.inf, -np.inf, m + np.log(d))[()]


def online_logsumexp(chunks: Iterable[ArrayLike], axis: int = -1) -> NDArray:
    r"""Log-sum-exp of the concatenation of ``chunks`` along ``axis``, one chunk at a time.

    Course: :prf:ref:`sc-thm-merge`, equation :eq:`sc-merge`, in :doc:`/book/part2/scale`.

    Only one chunk and one ``(m, d)`` pair are held at a time: the running pair
    is merged with each chunk's pair by :func:`lse_merge`. The result equals
    :func:`ce_lib.functional.logsumexp` of the concatenated array up to rounding, for any
    split into chunks.

    Parameters
    ----------
    chunks : iterable of array_like
        Pieces of the input, all of the same shape except along ``axis``
        (e.g. ``np.array_split(x, k, axis=axis)``, or a generator that
        computes each piece when asked for it).
    axis : int, default -1
        The axis along which the pieces are concatenated and reduced.

    Returns
    -------
    ndarray
        The log-sum-exp, with the shape of a chunk without ``axis``.

    Raises
    ------
    ValueError
        If ``chunks`` is empty.
    """
    state = None
    for chunk in chunks:
        pair = lse_pair(chunk, axis=axis)
        state = pair if state is None else lse_merge(state, pair)
    if state is None:
        raise ValueError("online_logsumexp needs at least one chunk")
    return lse_finalize(state)


# --------------------------------------------------------------------------
# Linear cross-entropy: logits = h W^T + b, never all at once
# --------------------------------------------------------------------------

# Default chunk: as many tokens as make about this many bytes of logits.
_CHUNK_BYTES = 256 << 20
# dW is accumulated in slices of about this many bytes of vocabulary rows.
_DW_SLICE_BYTES = 4 << 20


def _linear_inputs(h, W, target, bias, ignore_index, reduction):
    h, dtype = as_float_array(h, "h")
    W, w_dtype = as_float_array(W, "W")
    if h.ndim != 2 or W.ndim != 2 or h.shape[1] != W.shape[1]:
        raise ValueError(f"h must be (N, d) and W (V, d) with the same d; got h{h.shape} and W{W.shape}")
    compute = np.result_type(h.dtype, W.dtype)
    h, W = h.astype(compute, copy=False), W.astype(compute, copy=False)
    b = None
    if bias is not None:
        b, _ = as_float_array(bias, "bias")
        if b.shape != (W.shape[0],):
            raise ValueError(f"bias must have shape (V,) = ({W.shape[0]},); got {b.shape}")
        b = b.astype(compute, copy=False)
    check_reduction(reduction)
    if W.shape[0] == 0:
        raise ValueError("W has no rows: a vocabulary of 0 classes")
    y = check_class_target(target, (h.shape[0],), W.shape[0], ignore_index)
    return h, W, b, y, np.result_type(dtype, w_dtype)


def _chunk_rows(chunk_size: int | None, n_vocab: int, itemsize: int) -> int:
    if chunk_size is None:
        return max(1, _CHUNK_BYTES // (n_vocab * itemsize))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None; got {chunk_size!r}")
    return int(chunk_size)


def _chunk_ce(logits, y, keep, scale, want_grad):
    """Loss per row of a chunk of logits and, if ``want_grad``, its gradient written into ``logits``.

    One pass of :func:`ce_lib._fastpath._ce_rows` (max-shift first, no second
    pass for any row); a NaN or ``+inf`` logit makes its row NaN.
    """
    out = logits if want_grad else None
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        loss = _ce_rows(logits, y, out, scale)
    if not keep.all():
        loss[~keep] = 0.0
        if want_grad:
            logits[~keep] = 0
    return loss


def _linear_ce(h, W, target, bias, ignore_index, reduction, chunk_size, want_grad):
    h, W, b, y, dtype = _linear_inputs(h, W, target, bias, ignore_index, reduction)
    n, n_vocab = h.shape[0], W.shape[0]
    keep = y != ignore_index
    count = int(np.count_nonzero(keep))
    # "mean" of zero terms: value 0/0 = NaN, gradients 0 (every row is ignored and zeroed)
    scale = (1.0 / count if count else 0.0) if reduction == "mean" else 1.0
    y_safe = np.where(keep, y, 0)
    rows = min(_chunk_rows(chunk_size, n_vocab, h.itemsize), max(n, 1))
    logits = np.empty((rows, n_vocab), dtype=h.dtype)  # the only N-independent big buffer
    loss = np.empty(n)
    if want_grad:
        dh = np.empty_like(h)
        dW = np.zeros_like(W)
        db = np.zeros(n_vocab, dtype=h.dtype) if b is not None else None
        ones = np.ones(rows, dtype=h.dtype)
        v_slice = max(1, _DW_SLICE_BYTES // (W.shape[1] * W.itemsize))
        dw_scratch = np.empty((min(v_slice, n_vocab), W.shape[1]), dtype=W.dtype)
    for i in range(0, n, rows):
        j = min(i + rows, n)
        z = logits[: j - i]
        np.matmul(h[i:j], W.T, out=z)  # (chunk, V): the logits of this chunk only
        if b is not None:
            z += b
        loss[i:j] = _chunk_ce(z, y_safe[i:j], keep[i:j], scale, want_grad)
        if not want_grad:
            continue
        g = z  # now scale * (softmax - onehot), written over the logits
        np.matmul(g, W, out=dh[i:j])  # dL/dh = G W
        if db is not None:
            db += ones[: j - i] @ g  # dL/db = sum over tokens of G
        for v0 in range(0, n_vocab, v_slice):  # dL/dW += G^T h, a slice of the vocabulary at a time
            v1 = min(v0 + v_slice, n_vocab)
            part = dw_scratch[: v1 - v0]
            np.matmul(g[:, v0:v1].T, h[i:j], out=part)
            dW[v0:v1] += part
    if reduction == "none":
        value = loss.astype(dtype)
    else:
        mean = loss.sum() * scale if count else np.nan  # 0/0 = NaN for a mean over zero terms
        value = np.asarray(loss.sum() if reduction == "sum" else mean, dtype=dtype)[()]
    if not want_grad:
        return value, None
    grads = (dh.astype(dtype, copy=False), dW.astype(dtype, copy=False))
    return value, (*grads, None if db is None else db.astype(dtype, copy=False))


def linear_cross_entropy(
    h: ArrayLike,
    W: ArrayLike,
    target: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> NDArray:
    r"""Cross-entropy of the logits ``h W^T + b`` without materialising them.

    Course: :ref:`sc-sec-linear` in :doc:`/book/part2/scale`.

    .. math::

        \ell_n = \operatorname{LSE}(z_n) - z_{n y_n}, \qquad z_n = W h_n + b .

    The tokens are processed ``chunk_size`` at a time: only a
    ``chunk_size x V`` block of logits exists at once, so the extra memory is
    independent of ``N``.

    Parameters
    ----------
    h : array_like, shape (N, d)
        Hidden states (the last layer's input), one row per token.
    W : array_like, shape (V, d)
        Class (output-embedding) weights, one row per class.
    target : array_like of int, shape (N,)
        Class indices in ``[0, V)``, or ``ignore_index``.
    bias : array_like of shape (V,), optional
        Class biases :math:`b`.
    ignore_index : int, default -100
        Targets equal to this contribute nothing to the loss, the gradients or
        the mean's denominator.
    reduction : {"mean", "sum", "none"}, default "mean"
        As for :func:`ce_lib.categorical.cross_entropy`: if every target is
        ignored (or ``N = 0``), the mean is 0/0 = NaN and the gradients are 0.
    chunk_size : int, optional
        Tokens per chunk. By default, as many as make about 256 MiB of logits.

    Returns
    -------
    ndarray
        A scalar, or per-token losses for ``"none"``.

    Notes
    -----
    Each chunk takes the one-pass path of ``cross_entropy`` (row maximum
    subtracted first, then one exponential per logit), for logits of any scale
    or offset, with no second pass for any row. A NaN or ``+inf`` logit makes
    its token's loss and its row of :math:`\partial L/\partial h` NaN, and all of
    :math:`\partial L/\partial W` and :math:`\partial L/\partial b` NaN, as in PyTorch.
    """
    return _linear_ce(h, W, target, bias, ignore_index, reduction, chunk_size, want_grad=False)[0]


def linear_cross_entropy_value_and_grad(
    h: ArrayLike,
    W: ArrayLike,
    target: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> tuple[NDArray, tuple[NDArray, NDArray, NDArray | None]]:
    r""":func:`linear_cross_entropy` and its gradients, chunk by chunk of tokens.

    Course: equation :eq:`sc-linear-grads`, chunk by chunk of tokens as in :ref:`sc-sec-linear`
    (not the vocabulary chunking of :prf:ref:`sc-prop-defer`), in :doc:`/book/part2/scale`.

    With :math:`G = \partial L / \partial Z` (rows :math:`(p_n - e_{y_n})/N`
    under ``"mean"``), the gradients are

    .. math::  \frac{\partial L}{\partial h} = G W, \qquad
               \frac{\partial L}{\partial W} = G^\top h, \qquad
               \frac{\partial L}{\partial b} = G^\top \mathbf 1 .

    Each chunk's logits are computed, turned into that chunk's rows of
    :math:`G` in place, and used at once: the rows of :math:`\partial L/\partial h`
    are written, :math:`\partial L/\partial W` and :math:`\partial L/\partial b`
    are accumulated. The work is that of the materialised computation (three
    matrix products); the extra memory is one ``chunk_size x V`` block and a
    few MiB of scratch.

    Parameters
    ----------
    h, W, target, bias, ignore_index, reduction, chunk_size
        As for :func:`linear_cross_entropy`.

    Returns
    -------
    (loss, (dh, dW, db))
        ``db`` is ``None`` without a ``bias``. For ``"none"`` the gradients are
        those of the sum of the per-token losses.
    """
    return _linear_ce(h, W, target, bias, ignore_index, reduction, chunk_size, want_grad=True)


def linear_cross_entropy_grad(
    h: ArrayLike,
    W: ArrayLike,
    target: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> tuple[NDArray, NDArray, NDArray | None]:
    """Gradients ``(dh, dW, db)`` of :func:`linear_cross_entropy` (``db`` is ``None`` without a bias).

    Course: equation :eq:`sc-linear-grads` in :doc:`/book/part2/scale`.

    Parameters
    ----------
    h, W, target, bias, ignore_index, reduction, chunk_size
        As for :func:`linear_cross_entropy`.

    Returns
    -------
    (ndarray, ndarray, ndarray or None)
        Same shapes as ``h``, ``W`` and ``bias``.
    """
    return _linear_ce(h, W, target, bias, ignore_index, reduction, chunk_size, want_grad=True)[1]


def linear_cross_entropy_reference(
    h: ArrayLike,
    W: ArrayLike,
    target: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> tuple[NDArray, tuple[NDArray, NDArray, NDArray | None]]:
    """The materialised computation: all ``N x V`` logits, then
    :func:`ce_lib.categorical.cross_entropy_value_and_grad`.

    Course: the materialised computation whose memory equation :eq:`sc-logit-bytes` counts, in
    :doc:`/book/part2/scale`.

    Same arguments and results as :func:`linear_cross_entropy_value_and_grad`
    (without ``chunk_size``); it needs the ``N x V`` logits and their gradient
    in memory at once.

    Parameters
    ----------
    h, W, target, bias, ignore_index, reduction
        As for :func:`linear_cross_entropy`.

    Returns
    -------
    (loss, (dh, dW, db))
    """
    h, W, b, y, dtype = _linear_inputs(h, W, target, bias, ignore_index, reduction)
    logits = h @ W.T
    if b is not None:
        logits += b
    loss, g = cross_entropy_value_and_grad(logits, y, ignore_index=ignore_index, reduction=reduction)
    del logits
    db = None if b is None else g.sum(axis=0).astype(dtype, copy=False)
    return loss.astype(dtype), ((g @ W).astype(dtype, copy=False), (g.T @ h).astype(dtype, copy=False), db)
