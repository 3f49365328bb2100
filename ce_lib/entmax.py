r"""alpha-entmax: the Tsallis-entropy family between softmax and sparsemax.

For :math:`\alpha > 1`, alpha-entmax regularises the prediction with the
Tsallis entropy :math:`H_\alpha(p) = \frac{1}{\alpha(\alpha-1)} \sum_j (p_j - p_j^\alpha)`:

.. math::

    \alpha\text{-entmax}(z) = \arg\max_{p \in \Delta}\ \langle z, p \rangle + H_\alpha(p)
    = \bigl[(\alpha - 1) z - \tau \mathbf{1}\bigr]_+^{1/(\alpha - 1)},

where the threshold :math:`\tau` makes the result sum to one (Peters, Niculae &
Martins, 2019). :math:`\alpha = 2` is sparsemax; as :math:`\alpha \to 1` the map
tends to softmax. :func:`entmax15` computes :math:`\alpha = 1.5` exactly after a
sort; :func:`entmax_bisect` handles any :math:`\alpha > 1` by bisection on
:math:`\tau`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import as_float_array, normalize_axis
from .functional import shifted_rows

__all__ = ["entmax15", "entmax_bisect"]


def _prepare(x: ArrayLike, axis: int, name: str) -> tuple[NDArray, int, np.dtype]:
    """Input with the class axis last and each row's maximum subtracted, the axis, the result dtype.

    A row with no finite maximum (all ``-inf``, a ``+inf`` or a NaN entry) becomes all NaN.
    """
    a, dtype = as_float_array(x, "x")
    ax = normalize_axis(axis, a.ndim)
    if a.shape[ax] == 0:
        raise ValueError(f"x has an empty class axis (axis={axis}, shape {a.shape})")
    z, _ = shifted_rows(np.moveaxis(a, ax, -1))
    return z, ax, dtype


def entmax15(x: ArrayLike, axis: int = -1) -> NDArray:
    r"""1.5-entmax, computed exactly with a sort.

    Course: :prf:ref:`tg-def-entmax`, equation :eq:`tg-entmax`, for alpha = 1.5, in the form of
    :prf:ref:`tg-prop-entmax`, equation :eq:`tg-entmax-form`, in :doc:`/book/part2/targets`.

    .. math::

        \operatorname{entmax}_{1.5}(z) = \bigl[z/2 - \tau\bigr]_+^2 ,

    with :math:`\tau` chosen so that the result sums to one. Sort
    :math:`u = z/2` in decreasing order, :math:`u_{(1)} \ge u_{(2)} \ge \dots`
    (ranks start at 1). If the support is the top :math:`k` entries,
    :math:`\sum_{i \le k} (u_{(i)} - \tau)^2 = 1` gives

    .. math::

        \tau_k = \bar u_k - \sqrt{(1 - s_k)/k}, \qquad
        \bar u_k = \tfrac1k \sum_{i \le k} u_{(i)}, \quad
        s_k = \sum_{i \le k} (u_{(i)} - \bar u_k)^2 ,

    and the support size is the largest :math:`k` with :math:`\tau_k \le u_{(k)}`
    (Peters, Niculae & Martins, 2019, Algorithm 2).

    Parameters
    ----------
    x : array_like
        Logits. A ``-inf`` entry gets exactly 0.
    axis : int, default -1
        The class axis.

    Returns
    -------
    ndarray
        Same shape and floating dtype as ``x``: non-negative, sums to one along
        ``axis``, exactly zero where :math:`z_j/2 \le \tau`. A slice with no
        finite maximum (all ``-inf``, a ``+inf`` or a NaN entry) is NaN.

    Raises
    ------
    ValueError
        If ``x`` is not real or has an empty class axis.
    """
    z, ax, dtype = _prepare(x, axis, "entmax15")
    u = z / 2  # max 0 (shift invariance), so the squares stay small
    # Every u <= -1 is outside the support (tau >= max u - 1); a -inf entry is replaced by -2
    # in the sums below, so that they stay finite, and gets exactly 0 at the end.
    u_sorted = -np.sort(-np.where(u == -np.inf, -2.0, u), axis=-1)
    k = np.arange(1, u.shape[-1] + 1)
    mean = np.cumsum(u_sorted, axis=-1) / k
    mean_sq = np.cumsum(u_sorted**2, axis=-1) / k
    s = k * (mean_sq - mean**2)  # sum of squared deviations of the top k
    # For k beyond the support, (1 - s)/k may be negative; those k fail the test below
    # anyway, because tau_k would exceed u_(k); the clip only avoids a NaN.
    tau = mean - np.sqrt(np.maximum((1 - s) / k, 0.0))
    support = np.sum(tau <= u_sorted, axis=-1, keepdims=True)
    tau_star = np.take_along_axis(tau, support - 1, axis=-1)
    p = np.maximum(u - tau_star, 0.0) ** 2
    return np.moveaxis(p, -1, ax).astype(dtype, copy=False)


def entmax_bisect(x: ArrayLike, alpha: float = 1.5, axis: int = -1, n_iter: int = 80) -> NDArray:
    r"""alpha-entmax for any :math:`\alpha > 1`, by bisection on the threshold.

    Course: :prf:ref:`tg-def-entmax`, equation :eq:`tg-entmax`, solved for the threshold of
    :prf:ref:`tg-prop-entmax`, equation :eq:`tg-entmax-form`, in :doc:`/book/part2/targets`.

    .. math::

        \alpha\text{-entmax}(z) = \bigl[(\alpha - 1) z - \tau\bigr]_+^{1/(\alpha - 1)} .

    The sum of the right-hand side decreases continuously in :math:`\tau`. With
    :math:`M = (\alpha-1)\max_j z_j` it is at least 1 at :math:`\tau = M - 1`
    (the largest entry alone gives 1) and at most 1 at
    :math:`\tau = M - C^{1 - \alpha}` (every entry is at most :math:`1/C`), so
    bisection on that interval finds :math:`\tau`; the result is then divided by
    its sum to remove the remaining bisection error.

    Parameters
    ----------
    x : array_like
        Logits. A ``-inf`` entry gets exactly 0; a slice with no finite maximum
        (all ``-inf``, a ``+inf`` or a NaN entry) gives NaN.
    alpha : float, default 1.5
        The Tsallis exponent, :math:`\alpha > 1`. ``alpha = 2`` gives sparsemax;
        :math:`\alpha \to 1` tends to softmax (use :func:`ce_lib.functional.softmax` there).
    axis : int, default -1
        The class axis.
    n_iter : int, default 80
        Number of halvings of the bracketing interval (its initial length is
        below 1, so 80 halvings reach the float64 resolution of :math:`\tau`).

    Returns
    -------
    ndarray
        Same shape and floating dtype as ``x``; non-negative, sums to one along
        ``axis``.

    Raises
    ------
    ValueError
        If ``alpha`` is not a finite number greater than 1, ``n_iter < 1``, or
        ``x`` is not real or has an empty class axis.
    """
    if not (np.isscalar(alpha) and np.isfinite(alpha) and alpha > 1):
        raise ValueError(f"alpha must be a finite number > 1 (alpha = 1 is softmax); got {alpha!r}")
    if int(n_iter) < 1:
        raise ValueError(f"n_iter must be at least 1; got {n_iter}")
    z, ax, dtype = _prepare(x, axis, "entmax_bisect")
    a = float(alpha) - 1.0
    v = a * z  # (alpha - 1) z, shifted so that M = 0
    power = 1.0 / a

    def mapped(tau: NDArray) -> NDArray:
        return np.maximum(v - tau, 0.0) ** power

    tau_lo = np.full((*v.shape[:-1], 1), -1.0, dtype=v.dtype)  # sum >= 1 here
    width = 1.0 - float(z.shape[-1]) ** (-a)  # tau_hi = -C^(1 - alpha): sum <= 1 there
    for _ in range(int(n_iter)):
        width /= 2
        tau_mid = tau_lo + width
        tau_lo = np.where(mapped(tau_mid).sum(axis=-1, keepdims=True) >= 1, tau_mid, tau_lo)
    p = mapped(tau_lo)
    p = p / p.sum(axis=-1, keepdims=True)
    return np.moveaxis(p, -1, ax).astype(dtype, copy=False)
