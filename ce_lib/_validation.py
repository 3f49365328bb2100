"""Input checks and reductions shared by every function in :mod:`ce_lib`.

Every public function funnels its inputs through these helpers, so that a bad
argument fails the same way everywhere: with a :class:`ValueError` whose
message names the argument and the offending value or shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

REDUCTIONS = ("none", "mean", "sum")


def as_float_array(x: ArrayLike, name: str) -> tuple[NDArray[np.floating], np.dtype]:
    """Return ``(array to compute with, dtype of the result)`` for a real input.

    * float32 and float64 stay as they are (no copy);
    * float16 is computed in float32 and the result is cast back to float16;
    * integers and booleans are promoted to float64.
    """
    a = np.asarray(x)
    kind = a.dtype.kind
    if kind in "biu":
        a = a.astype(np.float64)
        return a, a.dtype
    if kind != "f":
        raise ValueError(f"{name} must be a real-valued array; got dtype {a.dtype}")
    if a.dtype.itemsize < 4:  # float16: too little range to compute in
        return a.astype(np.float32), a.dtype
    return a, a.dtype


def normalize_axis(axis: int, ndim: int, name: str = "axis") -> int:
    """Turn a possibly negative ``axis`` into an index in ``range(ndim)``."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"{name} must be an integer; got {axis!r}")
    if ndim == 0:
        raise ValueError(f"{name}={axis} needs an array with at least one dimension; got a scalar")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of bounds for an array with {ndim} dimension(s)")
    return int(axis) % ndim


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
    return reduction


def check_same_shape(a: NDArray[Any], b: NDArray[Any], name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b} must have the same shape as {name_a}; "
            f"got {name_b}.shape={b.shape} and {name_a}.shape={a.shape}"
        )


def check_broadcastable_to(w: NDArray[Any], shape: tuple[int, ...], name: str, to_name: str) -> None:
    """``w`` must broadcast to ``shape`` without changing it."""
    try:
        ok = np.broadcast_shapes(w.shape, shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name} of shape {w.shape} cannot be broadcast to the shape of {to_name}, {shape}")


def check_class_weight(weight: ArrayLike | None, n_classes: int, dtype: np.dtype) -> NDArray | None:
    """A per-class weight must be a 1-D array with one entry per class."""
    if weight is None:
        return None
    w, _ = as_float_array(weight, "weight")
    if w.shape != (n_classes,):
        raise ValueError(
            f"weight must be a 1-D array with one entry per class ({n_classes}); got weight.shape={w.shape}"
        )
    return w.astype(dtype, copy=False)


def as_index_array(a: NDArray[np.integer], name: str) -> NDArray[np.intp]:
    """Integer indices as ``np.intp``, the dtype NumPy indexes with.

    Every label or index array that ``ce_lib`` hands to NumPy goes through here.
    ``np.intp`` is int64 on 64-bit platforms but int32 on 32-bit ones
    (Pyodide/WebAssembly). There ``repeat`` and ``choose`` (and in NumPy 2.0
    also ``bincount`` and ``take``) refuse int64 input, since the cast to
    intp is not "safe", and ``astype`` would silently wrap values beyond
    2**31. So the values are checked to fit first; no copy when ``a`` already
    is ``np.intp``.
    """
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must have an integer dtype; got {a.dtype}")
    if a.dtype == np.intp:
        return a
    if a.size and not np.can_cast(a.dtype, np.intp):
        low, high = a.min(), a.max()
        if not (_fits_intp(low) and _fits_intp(high)):
            bad = high if _fits_intp(low) else low
            raise ValueError(f"{name} contains {bad}, which does not fit {_intp_range()}")
    return a.astype(np.intp)


def _fits_intp(value: int | np.integer) -> bool:
    info = np.iinfo(np.intp)
    return info.min <= int(value) <= info.max


def _intp_range() -> str:
    info = np.iinfo(np.intp)
    return f"the platform's index type np.intp ({np.dtype(np.intp).name}, [{info.min}, {info.max}])"


def check_class_target(
    target: ArrayLike,
    batch_shape: tuple[int, ...],
    n_classes: int,
    ignore_index: int | None = None,
    name: str = "target",
) -> NDArray[np.intp]:
    """Integer class labels of shape ``batch_shape``, each in ``[0, n_classes)``, as ``np.intp``.

    Labels equal to ``ignore_index`` are allowed and left as they are; they
    too must fit in ``np.intp`` (see :func:`as_index_array`). ``name`` is the
    argument's name in the error messages.
    """
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise ValueError(
            f"{name} of class indices must have an integer dtype; got {t.dtype} "
            f"(probability targets must have the same shape as the logits)"
        )
    if t.shape != batch_shape:
        raise ValueError(
            f"{name} must have the shape of the logits without the class axis, {batch_shape}; "
            f"got {name}.shape={t.shape}"
        )
    valid = (t >= 0) & (t < n_classes)
    if ignore_index is not None:
        valid |= t == ignore_index
    if not np.all(valid):
        bad = t[~valid].flat[0]
        raise ValueError(
            f"{name} contains class index {bad}, outside [0, {n_classes - 1}]"
            + (f" and not ignore_index={ignore_index}" if ignore_index is not None else "")
        )
    # Labels in [0, n_classes) always fit np.intp (n_classes is an array's length): only those equal
    # to an ignore_index out of the platform's range would not, and astype would wrap them.
    if ignore_index is not None and not _fits_intp(ignore_index) and np.any(t == ignore_index):
        raise ValueError(
            f"{name} contains {ignore_index} (= ignore_index), which does not fit {_intp_range()}; "
            "use an ignore_index within that range, such as the default -100"
        )
    return as_index_array(t, name)


def reduce(loss: NDArray, reduction: str, dtype: np.dtype, denominator: float | None = None) -> NDArray:
    """Apply a ``reduction`` to per-element losses and cast to the output dtype.

    ``"mean"`` divides the sum by ``denominator`` (default: the number of
    elements). A mean over zero terms (no elements, every target ignored, zero
    total weight) is 0/0 = NaN, as in PyTorch; its gradient is 0 (see
    :func:`reduction_scale`). ``"sum"`` of zero terms is 0.
    """
    if reduction == "none":
        return loss.astype(dtype, copy=False)
    total = loss.sum()
    if reduction == "mean":
        n = loss.size if denominator is None else denominator
        total = total / n if n else np.nan
    return np.asarray(total, dtype=dtype)[()]


def reduction_scale(reduction: str, n: float) -> float:
    """Factor by which a per-element gradient is multiplied under ``reduction``.

    ``"mean"`` divides by ``n``, the mean's denominator (the number of
    elements, or the total weight); ``"sum"`` and ``"none"`` (whose gradient is
    that of the sum) leave it alone. A mean over zero terms (``n == 0``) has
    gradient 0, not 0/0: nothing was averaged, so nothing moves the loss. PyTorch
    agrees when every target is ignored, but gives NaN for a zero total class
    weight; every ``ce_lib`` loss returns 0 in both cases.
    """
    if reduction == "mean":
        return 1.0 / n if n else 0.0
    return 1.0
