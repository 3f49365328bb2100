"""Temperature and calibration (Guo et al., 2017).

Dividing the logits by a temperature ``T`` changes how confident the softmax
is without changing which class wins. :func:`fit_temperature` picks the ``T``
that minimises the held-out negative log-likelihood; :func:`calibration_bins`
and :func:`expected_calibration_error` measure how far confidence is from
accuracy (with equal-width or equal-mass bins), and :func:`ece_bootstrap` puts
a bootstrap interval around that measurement. Distillation, the other use of a
temperature, is in :mod:`ce_lib.distillation`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import (
    as_float_array,
    as_index_array,
    check_class_target,
    normalize_axis,
)
from .functional import softmax

__all__ = [
    "CalibrationBins",
    "ECEBootstrap",
    "calibration_bins",
    "ece_bootstrap",
    "expected_calibration_error",
    "fit_temperature",
]

BINNINGS = ("equal_width", "equal_mass")


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

    Course: equation :eq:`tp-temp-scaling` in :doc:`/book/part2/temperature`.

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
    """Per-bin statistics of a reliability diagram.

    Course: the bins :math:`B_r` of equation :eq:`tp-ece` and :prf:ref:`tp-def-equal-mass` in
    :doc:`/book/part2/temperature`; returned by :func:`calibration_bins`.
    """

    edges: NDArray
    """Bin edges, ``n_bins + 1`` values from 0 to 1; bin ``r`` is ``(edges[r], edges[r+1]]``.

    Equal-width bins: ``r / n_bins``. Equal-mass bins: the inner edges are the
    largest confidence in each bin, so they depend on the data."""
    confidence: NDArray
    """Mean confidence (largest probability) of the examples in each bin (NaN if empty)."""
    accuracy: NDArray
    """Fraction of them classified correctly (NaN if empty)."""
    count: NDArray
    """Number of examples in each bin."""
    binning: str = "equal_width"
    """``"equal_width"`` or ``"equal_mass"``."""


def _check_binning(n_bins: int, binning: str) -> None:
    if isinstance(n_bins, bool) or not (isinstance(n_bins, (int, np.integer)) and n_bins >= 1):
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}")
    if not (isinstance(binning, str) and binning in BINNINGS):
        raise ValueError(f"binning must be one of {BINNINGS}; got {binning!r}")


def _confidence_and_correct(probs: ArrayLike, labels: ArrayLike, axis: int) -> tuple[NDArray, NDArray]:
    """Confidence (largest probability) and correctness of every example, shape (N,)."""
    p, y = _rows_and_labels(probs, labels, axis, "probs")
    if p.shape[0] == 0:
        raise ValueError("probs holds no examples; calibration needs at least one")
    if np.any(~((p >= 0) & (p <= 1))):
        raise ValueError("probs must be probabilities in [0, 1]")
    return p.max(axis=-1), (p.argmax(axis=-1) == y).astype(np.float64)


def _equal_width_index(confidence: NDArray, n_bins: int) -> tuple[NDArray, NDArray]:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted already answers in np.intp; the helper makes sure of it before bincount, which
    # in NumPy 2.0 refuses any other integer type where np.intp is int32 (it casts "safely").
    which = as_index_array(np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1), "bin")
    return edges, which


def _equal_mass_rows(keys: NDArray, n_bins: int) -> NDArray:
    """Equal-mass bin index of every entry of ``keys`` (B, N): integer ranks, each row sorted.

    Row by row, the sorted positions are cut into ``n_bins`` runs whose lengths
    differ by at most one (the longer runs first); a cut that would separate
    two equal keys is moved up to just after them, so that ties always share
    a bin (the lower one). Integer keys keep the comparisons exact.
    """
    n_rows, n = keys.shape
    sizes = np.full(n_bins, n // n_bins)
    sizes[: n % n_bins] += 1
    last = np.cumsum(sizes)[:-1] - 1  # position of the last entry of bins 0 .. n_bins-2
    thresholds = keys[:, last]  # (B, n_bins-1), non-decreasing in every row
    offset = np.arange(n_rows, dtype=np.int64)[:, None] * (int(keys.max(initial=0)) + 1)
    flat = np.searchsorted((thresholds + offset).ravel(), (keys + offset).ravel(), side="left")
    return as_index_array(flat.reshape(n_rows, n) - np.arange(n_rows)[:, None] * (n_bins - 1), "bin")


def _equal_mass_index(confidence: NDArray, n_bins: int) -> tuple[NDArray, NDArray]:
    order = np.argsort(confidence, kind="stable")
    _, rank = np.unique(confidence, return_inverse=True)  # equal confidences, equal rank
    rows = _equal_mass_rows(rank.reshape(-1)[order][None, :].astype(np.int64), n_bins)[0]
    which = np.empty_like(rows)
    which[order] = rows
    sorted_conf = confidence[order]
    n = len(confidence)
    sizes = np.full(n_bins, n // n_bins)
    sizes[: n % n_bins] += 1
    edges = np.concatenate([[0.0], sorted_conf[np.cumsum(sizes)[:-1] - 1], [1.0]])
    return edges, as_index_array(which, "bin")


def calibration_bins(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    n_bins: int = 15,
    axis: int = -1,
    binning: str = "equal_width",
) -> CalibrationBins:
    r"""Bin predictions by confidence, for a reliability diagram.

    Course: the bins :math:`B_r` of equation :eq:`tp-ece` and :prf:ref:`tp-def-equal-mass` in
    :doc:`/book/part2/temperature`.

    The confidence of an example is its largest predicted probability
    :math:`\hat p_n = \max_j p_{nj}`; its prediction is correct when that
    class is the label. With ``binning="equal_width"`` (the default), bin
    :math:`B_r = ((r-1)/K, r/K]`, :math:`r = 1, \dots, K`, collects the examples
    whose confidence falls in it (Guo et al., 2017). With
    ``binning="equal_mass"`` (adaptive or quantile bins, Nixon et al., 2019)
    the examples are sorted by confidence and cut into :math:`K` runs of equal
    size, so each bin holds :math:`\lfloor N/K \rfloor` or
    :math:`\lceil N/K \rceil` examples (unless ties fall at a cut: see Notes).

    Parameters
    ----------
    probs : array_like, shape (N, C) (class axis ``axis``)
        Predicted probabilities; at least one example.
    labels : array_like of int
        True classes.
    n_bins : int, default 15
        Number :math:`K` of bins.
    axis : int, default -1
        The class axis.
    binning : {"equal_width", "equal_mass"}, default "equal_width"
        How the bins are placed.

    Returns
    -------
    CalibrationBins

    Raises
    ------
    ValueError
        For a non-positive ``n_bins``, an unknown ``binning``, no examples, or
        ``probs`` outside :math:`[0, 1]`.

    Notes
    -----
    Equal-mass bins never separate equal confidences: a cut that would fall
    inside a run of ties is moved up to just after the run, so the whole run
    joins the lower bin, and the result does not depend on the order of the
    examples. Counts are then equal to within one only when there are no ties
    at the cuts; with heavy ties some bins are larger and some empty. If
    ``n_bins > N``, each distinct confidence gets a bin of its own and the
    remaining bins are empty. Empty bins
    have NaN statistics and count 0, as with equal-width bins, and do not
    enter :func:`expected_calibration_error`.
    """
    _check_binning(n_bins, binning)
    confidence, correct = _confidence_and_correct(probs, labels, axis)
    if binning == "equal_width":
        edges, which = _equal_width_index(confidence, n_bins)
    else:
        edges, which = _equal_mass_index(confidence, n_bins)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(which, weights=correct, minlength=n_bins) / count
    return CalibrationBins(edges, mean_conf, accuracy, count, binning)


def expected_calibration_error(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    n_bins: int = 15,
    axis: int = -1,
    binning: str = "equal_width",
) -> float:
    r"""Expected calibration error: the count-weighted gap between accuracy and confidence.

    Course: equation :eq:`tp-ece` in :doc:`/book/part2/temperature`.

    .. math::

        \mathrm{ECE} = \sum_{r=1}^{K} \frac{|B_r|}{N}\,
                       \bigl|\operatorname{acc}(B_r) - \operatorname{conf}(B_r)\bigr|
                     = \frac1N \sum_{r=1}^{K} \Bigl|\sum_{n \in B_r} (c_n - \hat p_n)\Bigr|,

    with :math:`c_n \in \{0, 1\}` the correctness and :math:`\hat p_n` the
    confidence of example :math:`n`.

    Parameters
    ----------
    probs, labels, n_bins, axis, binning
        As for :func:`calibration_bins`.

    Returns
    -------
    float
        In :math:`[0, 1]`. A perfectly calibrated model has *expected* binned
        ECE above 0 for finite :math:`N` (the absolute value of a noisy gap is
        positive on average); the estimate is biased upwards.
    """
    bins = calibration_bins(probs, labels, n_bins=n_bins, axis=axis, binning=binning)
    used = bins.count > 0
    gaps = np.abs(bins.accuracy[used] - bins.confidence[used])
    return float(np.sum(bins.count[used] * gaps) / bins.count.sum())


@dataclass(frozen=True)
class ECEBootstrap:
    """The result of :func:`ece_bootstrap`.

    Course: :ref:`tp-sec-ece-precision` in :doc:`/book/part2/temperature`; returned by
    :func:`ece_bootstrap`.
    """

    estimate: float
    """ECE of the data as given (:func:`expected_calibration_error`)."""
    low: float
    """Lower end of the percentile interval."""
    high: float
    """Upper end of the percentile interval."""
    level: float
    """Nominal coverage of the interval, e.g. 0.95."""
    replicates: NDArray
    """The ``n_boot`` bootstrap values of the ECE."""


def ece_bootstrap(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    n_bins: int = 15,
    binning: str = "equal_width",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | np.random.Generator | None = 0,
    axis: int = -1,
) -> ECEBootstrap:
    r"""Expected calibration error with a bootstrap percentile interval.

    Course: :ref:`tp-sec-ece-precision` in :doc:`/book/part2/temperature`.

    The examples are resampled with replacement ``n_boot`` times; each
    resample's ECE is computed with the same rule as
    :func:`expected_calibration_error` (for equal-mass bins the bins are
    recomputed on each resample, as they would be on new data), and the
    interval is made of the :math:`(1 \mp \text{level})/2` quantiles of these
    values. All resamples are computed at once, without a Python loop.

    Parameters
    ----------
    probs : array_like, shape (N, C) (class axis ``axis``)
        Predicted probabilities.
    labels : array_like of int
        True classes.
    n_bins : int, default 15
        Number of bins.
    binning : {"equal_width", "equal_mass"}, default "equal_width"
        As for :func:`calibration_bins`.
    n_boot : int, default 1000
        Number of bootstrap resamples. Memory grows like ``n_boot * N``.
    level : float, default 0.95
        Nominal coverage, in :math:`(0, 1)`.
    seed : int, numpy.random.Generator or None, default 0
        Seed of (or) the generator that draws the resamples; the default makes
        the result reproducible.
    axis : int, default -1
        The class axis.

    Returns
    -------
    ECEBootstrap
        ``estimate``, ``low``, ``high``, ``level`` and the ``replicates``.

    Raises
    ------
    ValueError
        For bad ``n_bins``, ``binning``, ``probs`` or ``labels`` (as for
        :func:`calibration_bins`), ``n_boot < 1`` or ``level`` outside
        :math:`(0, 1)`.

    Notes
    -----
    The interval describes the sampling variability of the *binned* ECE. It
    inherits the estimator's upward bias: for a perfectly calibrated model the
    true ECE is 0, yet every resample's ECE is positive, so the interval does
    not contain 0. Compare intervals of models measured with the same bins on
    the same examples, and compare an observed ECE with that of a
    synthetic calibrated model with the same confidences.
    """
    _check_binning(n_bins, binning)
    if isinstance(n_boot, bool) or not (isinstance(n_boot, (int, np.integer)) and n_boot >= 1):
        raise ValueError(f"n_boot must be a positive integer; got {n_boot!r}")
    if not (isinstance(level, (float, int, np.floating)) and 0 < level < 1):
        raise ValueError(f"level must be in (0, 1); got {level!r}")
    confidence, correct = _confidence_and_correct(probs, labels, axis)
    estimate = expected_calibration_error(probs, labels, n_bins=n_bins, axis=axis, binning=binning)
    rng = np.random.default_rng(seed)
    n = len(confidence)
    order = np.argsort(confidence, kind="stable")
    gap = (correct - confidence)[order]  # per example, sorted by confidence
    pos = np.sort(rng.integers(0, n, size=(n_boot, n)), axis=1)  # resampled positions, sorted
    if binning == "equal_width":
        which = _equal_width_index(confidence[order], n_bins)[1][pos]
    else:
        _, rank = np.unique(confidence[order], return_inverse=True)
        which = _equal_mass_rows(rank.reshape(-1).astype(np.int64)[pos], n_bins)
    flat = as_index_array((which + np.arange(n_boot)[:, None] * n_bins).ravel(), "bin")
    sums = np.bincount(flat, weights=gap[pos].ravel(), minlength=n_boot * n_bins).reshape(n_boot, n_bins)
    replicates = np.abs(sums).sum(axis=1) / n
    low, high = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    return ECEBootstrap(estimate, float(low), float(high), float(level), replicates)
