r"""Vocabulary-parallel cross-entropy, simulated with NumPy.

In tensor-parallel training (Megatron-LM, Shoeybi et al. 2019, arXiv
1909.08053) the output layer's weight matrix is split by rows of the
vocabulary over ``K`` ranks, so each rank holds only a *shard*
``z^(k) = z[:, o_k : o_k + V_k]`` of the ``N x V`` logits. The loss and its
gradient are computed without ever gathering the logits:

1. each rank takes the row maxima of its shard; an all-reduce (MAX) gives the
   global row maxima ``M`` (N numbers);
2. each rank computes, per row, the sum of ``exp(z^(k) - M)`` over its shard
   and the shifted target logit ``z_y - M`` if the target falls in its shard
   (else 0); two all-reduces (SUM) give ``Z e^{-M}`` and ``z_y - M``
   (N numbers each);
3. every rank then knows the loss ``log(Z e^{-M}) - (z_y - M)`` and writes the
   gradient of its own shard, ``exp(z^(k) - M) / (Z e^{-M})`` minus the
   one-hot shard.

One change from Megatron-LM: the sum of step 2 leaves the target class out
(``r = sum_{j != y} e^{z_j - M}``), and the loss is ``log1p(r)`` where the
target is the row maximum and ``(M - z_y) + log(r + e^{z_y - M})`` elsewhere
(the shared helper of ``ce_lib._fastpath``, as ``ce_lib.categorical.cross_entropy``
does), so that a confidently right row keeps a loss of 1e-20 instead of rounding
``log(1 + 1e-20)`` to 0.

Each all-reduce carries ``N`` numbers per rank, not ``N V``. Here the ranks are
the elements of a Python list and each all-reduce is an explicit reduction over
that list (``np.maximum.reduce``, ``np.add.reduce``); the function counts the
numbers each rank hands to the all-reduces by adding up the sizes of the arrays
it reduces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._fastpath import _row_loss
from ._validation import as_float_array, check_class_target, check_reduction

__all__ = ["VocabParallelResult", "vocab_parallel_cross_entropy"]


def _all_reduce(op: np.ufunc, local: list[NDArray], sent: list[int]) -> NDArray:
    """All-reduce the per-rank arrays ``local`` with ``op``; add one rank's payload to ``sent[0]``."""
    sizes = {a.size for a in local}
    if len(sizes) != 1:  # every rank must contribute an array of the same size
        raise RuntimeError(f"all-reduce of arrays of different sizes {sorted(sizes)}")
    sent[0] += sizes.pop()
    return op.reduce(local)


class VocabParallelResult(NamedTuple):
    """Result of :func:`vocab_parallel_cross_entropy`: ``(loss, grad_shards, numbers_all_reduced)``.

    Course: :ref:`sc-sec-vocab-parallel` in :doc:`/book/part2/scale`; returned by
    :func:`vocab_parallel_cross_entropy`.

    ``loss`` holds the per-example losses, shape ``(N,)`` (``reduction="none"``),
    or a scalar; ``grad_shards`` the gradient of the (reduced) loss with respect
    to each logit shard, each with the shape of its shard; ``numbers_all_reduced``
    how many numbers each rank contributes to all-reduces (its payload: the sum of
    the sizes of the per-rank arrays that were all-reduced), ``3 N`` (row maxima,
    sums of exponentials, target logits), independent of ``V``. A ring
    all-reduce of ``N`` numbers over ``K`` ranks sends ``2 N (K - 1) / K``
    numbers per rank on average, so the traffic is about twice the payload.
    """

    loss: NDArray
    grad_shards: list[NDArray]
    numbers_all_reduced: int


@np.errstate(invalid="ignore", divide="ignore", over="ignore", under="ignore")  # NaN/inf rows: see Notes
def vocab_parallel_cross_entropy(
    logit_shards: Sequence[ArrayLike],
    target: ArrayLike,
    *,
    ignore_index: int = -100,
    reduction: str = "none",
) -> VocabParallelResult:
    r"""Cross-entropy of logits split by vocabulary shards, with Megatron-LM's all-reduces.

    Course: :ref:`sc-sec-vocab-parallel` in :doc:`/book/part2/scale`.

    Shard ``k`` holds classes ``o_k, ..., o_k + V_k - 1`` with
    ``o_k = V_0 + ... + V_{k-1}``: concatenating the shards along the last
    axis gives the ``N x V`` logits. With the global row maximum
    :math:`M_n = \max_k \max_j z^{(k)}_{nj}` (all-reduce MAX), the row sums
    :math:`\sum_k \sum_j e^{z^{(k)}_{nj} - M_n} = Z_n e^{-M_n}` and the shifted target
    logit :math:`z_{n y_n} - M_n` (all-reduces SUM; a rank whose shard does
    not contain :math:`y_n` contributes 0),

    .. math::

        \ell_n = \log\bigl(Z_n e^{-M_n}\bigr) - (z_{n y_n} - M_n), \qquad
        \frac{\partial \ell_n}{\partial z^{(k)}_{nj}} = \frac{e^{z^{(k)}_{nj} - M_n}}{Z_n e^{-M_n}}
        - [\,o_k + j = y_n\,].

    The result equals :func:`ce_lib.categorical.cross_entropy` of the concatenated
    logits and its gradient, split the same way. Shards may have different
    widths (even 0), unlike Megatron-LM, which splits the vocabulary evenly.

    Parameters
    ----------
    logit_shards : sequence of array_like, each of shape (N, V_k)
        The logit shards of the ``K`` ranks, in vocabulary order.
    target : array_like of int, shape (N,)
        Class indices in ``[0, V)`` with ``V = sum V_k``, or ``ignore_index``.
    ignore_index : int, default -100
        Targets equal to this contribute nothing to the loss, the gradients or
        the mean's denominator.
    reduction : {"none", "mean", "sum"}, default "none"
        ``"none"`` returns the per-example losses and the gradients of their
        sum; ``"mean"`` divides by the number of non-ignored examples. If
        there are none, the mean is 0/0 = NaN and the gradients are 0 (as
        ``cross_entropy``).

    Returns
    -------
    VocabParallelResult
        ``(loss, grad_shards, numbers_all_reduced)``; ``numbers_all_reduced`` is
        counted from the arrays actually all-reduced (``3 N``).

    Raises
    ------
    ValueError
        If there are no shards, a shard is not 2-D, the shards disagree on
        ``N``, the vocabulary is empty, or a target is out of range.

    Notes
    -----
    Non-finite logits follow PyTorch, as :func:`ce_lib.categorical.cross_entropy`:
    a NaN or ``+inf`` logit makes its row's loss and gradient NaN, and so does a
    row whose logits are all ``-inf``; a ``-inf`` logit elsewhere has
    probability 0 (a target at ``-inf`` has loss ``+inf`` and the finite gradient
    ``p - e_y``).
    """
    if isinstance(logit_shards, np.ndarray) or not isinstance(logit_shards, Sequence) or not logit_shards:
        raise ValueError("logit_shards must be a non-empty list of (N, V_k) arrays, one per rank")
    shards, out_dtypes = [], []
    for k, s in enumerate(logit_shards):
        a, out_dtype = as_float_array(s, f"logit_shards[{k}]")
        out_dtypes.append(out_dtype)
        if a.ndim != 2:
            raise ValueError(f"logit_shards[{k}] must be 2-D (N, V_k); got shape {a.shape}")
        shards.append(a)
    n = shards[0].shape[0]
    if any(a.shape[0] != n for a in shards):
        rows_per_shard = [a.shape[0] for a in shards]
        raise ValueError(f"all shards must have the same number of rows N; got {rows_per_shard}")
    widths = [a.shape[1] for a in shards]
    n_vocab = sum(widths)
    if n_vocab == 0:
        raise ValueError("the shards hold no classes (every V_k is 0)")
    dtype = np.result_type(*shards)  # the dtype to compute in (float16 is computed in float32)
    out_dtype = np.result_type(*out_dtypes)
    shards = [a.astype(dtype, copy=False) for a in shards]
    check_reduction(reduction)
    y = check_class_target(target, (n,), n_vocab, ignore_index)
    keep = y != ignore_index
    y_safe = np.where(keep, y, 0)
    offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.intp)
    rows = np.arange(n)
    sent = [0]  # numbers each rank has contributed to all-reduces so far

    # 1. local row maxima, then all-reduce MAX (N numbers per rank)
    local_max = [a.max(axis=1) if a.shape[1] else np.full(n, -np.inf, dtype=dtype) for a in shards]
    row_max = _all_reduce(np.maximum, local_max, sent)  # NaN if any shard's row has a NaN

    # 2. local sums of exp(z - M) over the classes other than the target, and the local
    #    shifted target logit (0 if the target is not in this shard); then all-reduce SUM
    shifted_exp = [np.exp(a - row_max[:, None]) for a in shards]
    local_rest, local_target, has_target = [], [], []
    for a, e, o, w in zip(shards, shifted_exp, offsets, widths, strict=True):
        here = (y_safe >= o) & (y_safe < o + w)  # does the target fall in this shard?
        t = np.zeros(n)  # float64: the difference of two logits is exact for float32 input
        t[here] = a[rows[here], y_safe[here] - o].astype(np.float64) - row_max[here]
        others = e.copy()
        others[rows[here], y_safe[here] - o] = 0.0  # leave the target out: no cancellation later
        rest = others.sum(axis=1)
        local_rest.append(rest)
        local_target.append(t)
        has_target.append(here)
    rest = _all_reduce(np.add, local_rest, sent)  # sum over j != y of e^{z_j - M}
    target_shifted = _all_reduce(np.add, local_target, sent)  # z_y - M
    u_y = np.exp(target_shifted)  # e^{z_y - M}, in [0, 1]
    sum_exp = rest + u_y  # Z e^{-M}, in [1, V]

    # 3. every rank: the loss (without cancellation), and its shard's gradient
    loss = np.where(keep, _row_loss(-target_shifted, rest, u_y), 0.0)
    count = int(np.count_nonzero(keep))
    # "mean" of zero terms: value 0/0 = NaN, gradients 0 (every row is ignored and zeroed)
    scale = (1.0 / count if count else 0.0) if reduction == "mean" else 1.0
    grads = []
    for e, o, here in zip(shifted_exp, offsets, has_target, strict=True):
        g = e / sum_exp[:, None]
        g[rows[here], y_safe[here] - o] = -rest[here] / sum_exp[here]  # p_y - 1 = -r / (r + u_y)
        g[~keep] = 0.0
        grads.append((g * scale).astype(out_dtype, copy=False))
    if reduction == "none":
        value = loss.astype(out_dtype)
    elif reduction == "sum":
        value = np.asarray(loss.sum(), dtype=out_dtype)[()]
    else:
        value = np.asarray(loss.sum() * scale if count else np.nan, dtype=out_dtype)[()]
    return VocabParallelResult(value, grads, sent[0])
