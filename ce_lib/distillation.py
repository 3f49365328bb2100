"""Knowledge distillation (Hinton et al., 2015): the softened teacher-student loss.

Both sets of logits are divided by a temperature ``T``; the student is trained
towards the teacher's softened distribution, and the loss carries a ``T**2``
factor so that its gradient keeps the same scale as ``T`` changes.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import (
    as_float_array,
    check_reduction,
    check_same_shape,
    normalize_axis,
    reduce,
    reduction_scale,
)
from .functional import log_softmax, shifted_rows, softmax

__all__ = ["distillation_loss", "distillation_loss_grad"]


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
    # Shift invariant in both arguments: subtract each row's maximum first, then soften.
    s, bad_s = shifted_rows(np.moveaxis(s, ax, -1))
    t, bad_t = shifted_rows(np.moveaxis(t, ax, -1).astype(s.dtype, copy=False))
    bad = (bad_s | bad_t)[..., None]  # a row without a distribution in either argument is NaN
    s, t = np.where(bad, np.nan, s) / temperature, np.where(bad, np.nan, t) / temperature
    return s, t, softmax(t), ax, dtype


def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    temperature: float = 2.0,
    axis: int = -1,
    reduction: str = "mean",
) -> NDArray:
    r"""Knowledge-distillation loss: :math:`T^2` times the KL divergence of softened outputs.

    Course: equation :eq:`tp-kd` in :doc:`/book/part2/temperature`.

    .. math::

        \ell_n = T^2 \, \mathrm{KL}\bigl(q_n \,\Vert\, p_n\bigr),\qquad
        q_n = \operatorname{softmax}(v_n / T),\; p_n = \operatorname{softmax}(z_n / T).

    Where :math:`1/T` enters: the KL term alone has the gradient
    :math:`(p_n - q_n)/T` with respect to the student logits (one factor
    :math:`1/T` from the chain rule through :math:`z_n/T`), and for large
    :math:`T` the softened outputs differ by
    :math:`p - q \approx \bigl((z - \bar z) - (v - \bar v)\bigr)/(C T)`
    (bars: means over the classes), a second factor :math:`1/T`. So the
    gradient of the KL term shrinks like :math:`1/T^2`; multiplied by
    :math:`T^2`, the gradient of this loss is :math:`T(p_n - q_n)`, which tends
    to :math:`\bigl((z - \bar z) - (v - \bar v)\bigr)/C` and stays
    :math:`O(1)`. The soft term thus keeps its weight against the hard-label
    loss when :math:`T` is changed (Hinton et al., 2015).

    Parameters
    ----------
    student_logits : array_like, shape (..., C, ...)
        The student's logits :math:`z_n`; the class axis is ``axis``.
    teacher_logits : array_like
        The teacher's logits :math:`v_n`, same shape as ``student_logits``.
    temperature : float, default 2.0
        :math:`T > 0`.
    axis : int, default -1
        The class axis.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` averages over samples: every position of the non-class axes
        (PyTorch's ``kl_div(reduction="batchmean")`` for a 2-D ``(N, C)`` input;
        with more axes, batchmean divides by ``N`` only). NaN for an empty batch.

    Returns
    -------
    ndarray
        Scalar, or per-sample losses for ``"none"``.

    Notes
    -----
    Invariant to a common offset of a row of either argument: each row's
    maximum is subtracted before the division by ``T``. A teacher class at
    ``-inf`` (probability 0) adds 0 (as in PyTorch's ``kl_div`` with
    ``log_target=False`` where the student's logit is finite; where the
    student's is also ``-inf``, PyTorch gives NaN and ``ce_lib`` 0, the limit); a student class
    at ``-inf`` where the teacher's is finite makes the loss ``+inf`` (the
    gradient stays finite). A row with no finite maximum in either argument
    (all ``-inf``, a ``+inf`` or a NaN entry) is NaN.
    """
    s, t, q, _, dtype = _distillation_inputs(student_logits, teacher_logits, temperature, axis, reduction)
    # A teacher class at -inf (q = 0 exactly) adds 0; a student class at -inf where the teacher's
    # is finite (q > 0, even if q underflows) makes the KL divergence +inf.
    with np.errstate(invalid="ignore"):
        terms = np.where(s == -np.inf, np.inf, q * (log_softmax(t) - log_softmax(s)))
    kl = np.sum(np.where(t == -np.inf, 0.0, terms), axis=-1)
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

    Course: :prf:ref:`tp-prop-kd`, equation :eq:`tp-kd-grad`, in :doc:`/book/part2/temperature`.

    .. math::

        \nabla_{z_n} \ell_n = T\,\bigl(\operatorname{softmax}(z_n/T) - \operatorname{softmax}(v_n/T)\bigr)

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
