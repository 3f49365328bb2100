"""Cross-entropy, fast path: class-index targets without weights or smoothing.

The reference functions of :mod:`ce_lib.categorical` build a dense coefficient
array q and take log_softmax and softmax separately: about ten passes over N x C
numbers. For the common case (integer labels, no class weights, no label
smoothing) the same value and gradient need only one exponential per logit and
two cheap passes over data that is still in the cache.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import REDUCTIONS, as_float_array, check_class_target, normalize_axis

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
