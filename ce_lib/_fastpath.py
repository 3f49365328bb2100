"""Cross-entropy, fast path: class-index targets without weights or smoothing.

The reference functions of :mod:`ce_lib.categorical` build a dense coefficient
array q and take log_softmax and softmax separately: about ten passes over N x C
numbers. For the common case (integer labels, no class weights, no label
smoothing) the same value and gradient need only one exponential per logit and
a few cheap passes over data that is still in the cache.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import REDUCTIONS, as_float_array, check_class_target, normalize_axis

#
# With the row maximum M and the target logit z_y of a row (every row, no
# exceptions):
#
#   e = exp(z - M)                (the max-shift, done FIRST: each e_c <= 1, and
#                                  e_c = 1 at the maximum, so nothing overflows)
#   r = sum_{c != y} e_c,  s = r + e_y            (1 <= s <= C)
#   loss = log1p(r)               if z_y = M     (e_y = 1: a confident row keeps
#                                                 its tiny loss, no cancellation)
#        = (M - z_y) + log(s)     if z_y < M     (two terms >= 0: no cancellation)
#   grad = e / s,  with -r / s at the target     (= p_y - 1 without cancellation)
#
# Because 1 <= s <= C, the factor 1/s is a normal number and no row needs a
# second pass: not rows with log Z < 0 (z-loss, small or shifted logits), not
# rows near the overflow edge. The result depends only on the differences
# z_c - M, so adding an exactly representable constant to a row of logits on
# a grid gives bit-for-bit the same result. Non-finite logits follow PyTorch
# with no special case: a NaN or +inf logit gives M = NaN or z - M = NaN, so
# that row is NaN; a row whose logits are all -inf has M = -inf, z - M = NaN:
# NaN; a masked class (z_c = -inf) has e_c = 0; a target at -inf has e_y = 0,
# loss +inf and gradient p - e_y (finite). tests/test_fastpath.py and
# tests/test_scale.py check this path against mpmath and the reference.

# Rows are processed in blocks of about this many bytes, so that a block is
# still in cache (L2, or a shared L3) for the passes after the first read.
_BLOCK_BYTES = 1 << 20


def _row_loss(gap: NDArray, rest: NDArray, e_y: NDArray) -> NDArray:
    """Per-row cross-entropy from the max-shifted sums, without cancellation.

    ``gap = M - z_y >= 0`` (float64), ``rest = sum_{c != y} exp(z_c - M)`` and
    ``e_y = exp(z_y - M)``. Where the target is a maximum (``gap == 0``),
    ``e_y = 1`` and the loss is ``log1p(rest)``; elsewhere ``p_y <= 1/2`` and
    ``gap + log(rest + e_y)`` adds two non-negative numbers. NaN propagates.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap == 0, np.log1p(rest), gap + np.log(rest + e_y))


def _ce_rows(z: NDArray, y: NDArray, out: NDArray | None, scale: float) -> NDArray:
    """Per-row cross-entropy of ``z`` (n, C) and ``out = scale * (softmax(z) - onehot(y))``.

    ``z`` is C-contiguous float32 or float64; ``y`` holds labels in ``[0, C)``;
    ``out`` has the shape and dtype of ``z`` and may be ``z`` itself (in place),
    or is ``None`` for the loss alone. One call is one pass over the rows, block
    by block: row maximum, subtract, exponential, sum, scale, with no second
    pass for any row. Returns the per-row losses (float64).
    """
    n, n_classes = z.shape
    dtype = z.dtype
    rows_per_block = max(1, _BLOCK_BYTES // max(1, n_classes * z.itemsize))
    all_rows = np.arange(n)
    z_y = z[all_rows, y].astype(np.float64)  # before an in-place `out` overwrites z
    row_max = np.empty(n, dtype=dtype)
    e_y = np.empty(n)
    rest = np.empty(n)
    ones = np.ones(n_classes, dtype=dtype)
    scratch = np.empty((min(rows_per_block, n), n_classes), dtype=dtype) if out is None else None
    for i in range(0, n, rows_per_block):
        j = min(i + rows_per_block, n)
        r, y_b, m = all_rows[: j - i], y[i:j], row_max[i:j]
        block = out[i:j] if out is not None else scratch[: j - i]
        np.max(z[i:j], axis=1, out=m)  # reads the block into the cache
        np.subtract(z[i:j], m[:, None], out=block)  # the shift first: z_c - M <= 0
        np.exp(block, out=block)
        e_y[i:j] = block[r, y_b]
        block[r, y_b] = 0
        rest[i:j] = block @ ones  # sum over the classes other than y (a BLAS matrix-vector product)
        if out is not None:
            s = rest[i:j] + e_y[i:j]  # in [1, C]: 1/s is a normal number
            np.multiply(block, (scale / s).astype(dtype)[:, None], out=block)
            block[r, y_b] = -scale * rest[i:j] / s
    return _row_loss(row_max.astype(np.float64) - z_y, rest, e_y)


def fast_cross_entropy(
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

    The fast path takes every class-index target without ``weight`` or
    ``label_smoothing``, whatever the logits (any scale or offset, -inf
    masks, NaN or +inf, which make their row NaN as in PyTorch) and whatever
    the batch (an empty one, every target ignored). A mean over zero terms
    (every target ignored, an empty batch) has the value 0/0 = NaN and an
    all-zero gradient. Returning ``None`` for the other options and for bad
    arguments leaves them, and the error messages, to the reference.
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
    if n_classes == 0:
        return None  # the reference names the empty class axis
    batch_shape = z.shape[:ax] + z.shape[ax + 1 :]
    y = check_class_target(t, batch_shape, n_classes, ignore_index).reshape(-1)
    z2 = np.ascontiguousarray(np.moveaxis(z, ax, -1)).reshape(-1, n_classes)  # a copy only if axis != -1
    keep = y != ignore_index
    count = int(np.count_nonzero(keep))
    # "mean" of zero terms: value 0/0 = NaN, gradient 0 (every row is ignored, so every row is zeroed)
    scale = (1.0 / count if count else 0.0) if reduction == "mean" else 1.0
    y_safe = np.where(keep, y, 0)
    grad = np.empty_like(z2) if want_grad else None
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        loss = _ce_rows(z2, y_safe, grad, scale)
    if count < y.size:
        loss[~keep] = 0.0
        if want_grad:
            grad[~keep] = 0
    if reduction == "none":
        value = loss.reshape(batch_shape).astype(dtype)
    elif reduction == "sum":
        value = np.asarray(loss.sum(), dtype=dtype)[()]
    else:
        value = np.asarray(loss.sum() * scale if count else np.nan, dtype=dtype)[()]
    if want_grad:
        grad = np.moveaxis(grad.reshape(*batch_shape, n_classes), -1, ax).astype(dtype, copy=False)
    return value, grad
