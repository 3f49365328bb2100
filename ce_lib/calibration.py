"""Temperature: calibration (Guo et al., 2017) and distillation (Hinton et al., 2015).

Dividing the logits by a temperature ``T`` changes how confident the softmax
is without changing which class wins. :func:`fit_temperature` picks the ``T``
that minimises the held-out negative log-likelihood; :func:`calibration_bins`
and :func:`expected_calibration_error` measure how far confidence is from
accuracy; :func:`distillation_loss` is the softened teacher-student loss with
its ``T**2`` factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import (
    as_float_array,
    as_index_array,
    check_class_target,
    check_reduction,
    check_same_shape,
    normalize_axis,
    reduce,
    reduction_scale,
)
from .functional import log_softmax, softmax

__all__ = [
    "CalibrationBins",
    "calibration_bins",
    "distillation_loss",
    "distillation_loss_grad",
    "expected_calibration_error",
    "fit_temperature",
]


def _rows_and_labels(x: ArrayLike, labels: ArrayLike, axis: int, name: str) -> tuple[NDArray, NDArray]:
    """Float64 rows (N, C) with the class axis last, and integer labels (N,)."""
    z, _ = as_float_array(x, name)
    ax = normalize_axis(axis, z.ndim)
    if z.shape[ax] == 0:
        raise ValueError(f"{name} has an empty class axis (axis={axis}, shape {z.shape})")
    z = np.moveaxis(z, ax, -1).astype(np.float64)
    y = check_class_target(labels, z.shape[:-1], z.shape[-1], name="labels")
    return z.reshape(-1, z.shape[-1]), y.reshape(-1)


def fit_temperature(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
    bounds: tuple[float, float] = (0.05, 20.0),
    tol: float = 1e-10,
) -> float:
    r"""The temperature that minimises the negative log-likelihood of held-out data.

    .. math::

        T^\star = \arg\min_{T > 0} \frac1N \sum_n -\log \operatorname{softmax}(z_n / T)_{y_n}.

    In :math:`\beta = 1/T` the objective is convex (cross-entropy is convex in
    the logits, and the logits are linear in :math:`\beta`), with derivative

    .. math::

        \frac{d}{d\beta} = \frac1N \sum_n \bigl(\langle \operatorname{softmax}(\beta z_n), z_n\rangle
                           - z_{n y_n}\bigr),

    which increases with :math:`\beta`. Its root is found by bisection: no
    step size, no starting point, and the answer does not depend on them.

    Parameters
    ----------
    logits : array_like, shape (N, C) (class axis ``axis``)
        Held-out logits of a trained model (not the training set's).
    labels : array_like of int
        Their true classes.
    axis : int, default -1
        The class axis.
    bounds : (float, float), default (0.05, 20.0)
        Search interval for :math:`T`.
    tol : float, default 1e-10
        Bisection stops when the bracket on :math:`\beta` is narrower than this.

    Returns
    -------
    float
        :math:`T^\star`. ``T > 1`` softens an over-confident model.

    Raises
    ------
    ValueError
        If the minimum lies outside ``bounds``. In particular, when every
        held-out example is classified correctly the likelihood keeps growing
        as :math:`T \to 0` and there is no finite optimum.
    """
    z, y = _rows_and_labels(logits, labels, axis, "logits")
    lo_t, hi_t = bounds
    if not 0 < lo_t < hi_t < np.inf:
        raise ValueError(f"bounds must satisfy 0 < low < high < inf; got {bounds!r}")
    z_y = z[np.arange(len(y)), y]

    def slope(beta: float) -> float:
        return float(np.mean(np.sum(softmax(beta * z) * z, axis=-1) - z_y))

    lo, hi = 1.0 / hi_t, 1.0 / lo_t  # bracket on beta
    if slope(lo) > 0:
        raise ValueError(f"the NLL is minimised at a temperature above bounds[1]={hi_t}")
    if slope(hi) <= 0:
        raise ValueError(
            f"the NLL keeps decreasing below bounds[0]={lo_t}: the held-out data are (nearly) all "
            "classified correctly, so no finite temperature is optimal"
        )
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return 1.0 / (0.5 * (lo + hi))


@dataclass(frozen=True)
class CalibrationBins:
    """Per-bin statistics of a reliability diagram (equal-width confidence bins)."""

    edges: NDArray
    """Bin edges, ``n_bins + 1`` values from 0 to 1; bin ``b`` is ``(edges[b], edges[b+1]]``."""
    confidence: NDArray
    """Mean confidence (largest probability) of the examples in each bin (NaN if empty)."""
    accuracy: NDArray
    """Fraction of them classified correctly (NaN if empty)."""
    count: NDArray
    """Number of examples in each bin."""


def calibration_bins(
    probs: ArrayLike, labels: ArrayLike, *, n_bins: int = 15, axis: int = -1
) -> CalibrationBins:
    r"""Bin predictions by confidence, for a reliability diagram.

    The confidence of an example is its largest predicted probability
    :math:`\hat p_n = \max_c p_{nc}`; its prediction is correct when that
    class is the label. Bin :math:`B_b = ((b-1)/M, b/M]` collects the examples
    whose confidence falls in it (Guo et al., 2017).

    Parameters
    ----------
    probs : array_like, shape (N, C) (class axis ``axis``)
        Predicted probabilities.
    labels : array_like of int
        True classes.
    n_bins : int, default 15
        Number :math:`M` of equal-width bins.
    axis : int, default -1
        The class axis.

    Returns
    -------
    CalibrationBins
    """
    if not (isinstance(n_bins, (int, np.integer)) and n_bins >= 1):
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}")
    p, y = _rows_and_labels(probs, labels, axis, "probs")
    if np.any(~((p >= 0) & (p <= 1))):
        raise ValueError("probs must be probabilities in [0, 1]")
    confidence = p.max(axis=-1)
    correct = p.argmax(axis=-1) == y
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted already answers in np.intp; the helper makes sure of it before bincount, which
    # in NumPy 2.0 refuses any other integer type where np.intp is int32 (it casts "safely").
    which = as_index_array(np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1), "bin")
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(which, weights=correct, minlength=n_bins) / count
    return CalibrationBins(edges, mean_conf, accuracy, count)


def expected_calibration_error(
    probs: ArrayLike, labels: ArrayLike, *, n_bins: int = 15, axis: int = -1
) -> float:
    r"""Expected calibration error: the count-weighted gap between accuracy and confidence.

    .. math::

        \mathrm{ECE} = \sum_{b=1}^{M} \frac{|B_b|}{N}\,
                       \bigl|\operatorname{acc}(B_b) - \operatorname{conf}(B_b)\bigr|

    Parameters
    ----------
    probs, labels, n_bins, axis
        As for :func:`calibration_bins`.

    Returns
    -------
    float
        In :math:`[0, 1]`; 0 for a perfectly calibrated model.
    """
    bins = calibration_bins(probs, labels, n_bins=n_bins, axis=axis)
    used = bins.count > 0
    gaps = np.abs(bins.accuracy[used] - bins.confidence[used])
    return float(np.sum(bins.count[used] * gaps) / bins.count.sum())


def _distillation_inputs(
    student: ArrayLike, teacher: ArrayLike, temperature: float, axis: int, reduction: str
) -> tuple[NDArray, NDArray, NDArray, int, np.dtype]:
    s, dtype = as_float_array(student, "student_logits")
    t, _ = as_float_array(teacher, "teacher_logits")
    check_same_shape(s, t, "student_logits", "teacher_logits")
    ax = normalize_axis(axis, s.ndim)
    check_reduction(reduction)
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be positive; got {temperature!r}")
    s = np.moveaxis(s, ax, -1)
    t = np.moveaxis(t, ax, -1).astype(s.dtype, copy=False)
    return s / temperature, t / temperature, softmax(t / temperature), ax, dtype


def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    temperature: float = 2.0,
    axis: int = -1,
    reduction: str = "mean",
) -> NDArray:
    r"""Knowledge-distillation loss: :math:`T^2` times the KL divergence of softened outputs.

    .. math::

        \ell_n = T^2 \, \mathrm{KL}\bigl(q_n \,\Vert\, p_n\bigr),\qquad
        q_n = \operatorname{softmax}(t_n / T),\; p_n = \operatorname{softmax}(s_n / T).

    Where :math:`1/T` enters: the KL term alone has the gradient
    :math:`(p_n - q_n)/T` with respect to the student logits (one factor
    :math:`1/T` from the chain rule through :math:`s_n/T`), and for large
    :math:`T` the softened outputs differ by
    :math:`p - q \approx \bigl((s - \bar s) - (t - \bar t)\bigr)/(C T)`
    (bars: means over the classes), a second factor :math:`1/T`. So the
    gradient of the KL term shrinks like :math:`1/T^2`; multiplied by
    :math:`T^2`, the gradient of this loss is :math:`T(p_n - q_n)`, which tends
    to :math:`\bigl((s - \bar s) - (t - \bar t)\bigr)/C` and stays
    :math:`O(1)`. The soft term thus keeps its weight against the hard-label
    loss when :math:`T` is changed (Hinton et al., 2015).

    Parameters
    ----------
    student_logits : array_like, shape (..., C, ...)
        The student's logits :math:`s_n`; the class axis is ``axis``.
    teacher_logits : array_like
        The teacher's logits :math:`t_n`, same shape as ``student_logits``.
    temperature : float, default 2.0
        :math:`T > 0`.
    axis : int, default -1
        The class axis.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` averages over samples (PyTorch's ``kl_div(reduction="batchmean")``).

    Returns
    -------
    ndarray
        Scalar, or per-sample losses for ``"none"``.
    """
    s, t, q, _, dtype = _distillation_inputs(student_logits, teacher_logits, temperature, axis, reduction)
    kl = np.sum(q * (log_softmax(t) - log_softmax(s)), axis=-1)
    return reduce(temperature**2 * kl, reduction, dtype)


def distillation_loss_grad(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    temperature: float = 2.0,
    axis: int = -1,
    reduction: str = "mean",
) -> NDArray:
    r"""Gradient of :func:`distillation_loss` with respect to the student logits.

    .. math::

        \nabla_{s_n} \ell_n = T\,\bigl(\operatorname{softmax}(s_n/T) - \operatorname{softmax}(t_n/T)\bigr)

    Parameters
    ----------
    student_logits, teacher_logits, temperature, axis, reduction
        As for :func:`distillation_loss`.

    Returns
    -------
    ndarray
        Same shape and dtype as ``student_logits``.
    """
    s, _, q, ax, dtype = _distillation_inputs(student_logits, teacher_logits, temperature, axis, reduction)
    grad = temperature * (softmax(s) - q) * reduction_scale(reduction, int(np.prod(s.shape[:-1])))
    return np.moveaxis(grad, -1, ax).astype(dtype, copy=False)
