"""Exact oracles for the losses that have no plain torch twin: mpmath at 50 digits.

Each function's formula is evaluated **as its docstring writes it**, in mpmath
(``mp.dps = 50``) on the exact values of the (float32 or float64) inputs, and so
is its gradient, from the docstring's closed form. Hypothesis draws the inputs:
shapes with one or more batch axes (also a class axis in the middle, ``axis=1``,
size-1 axes and empty batch axes), both dtypes, logits on a grid of eighths
shifted by an exactly representable offset (up to +-1e4 in float32 and +-1e15
in float64, so that ``z + c`` is exact and every shift-invariant function must
return the unshifted answer), ``-inf`` entries (also the target and the only
competitor), ties, and every option of each function.

Tolerances: ``ULPS`` units of the dtype's epsilon times a *scale* that each
oracle returns with its value: the magnitude of the result, or, where the
formula subtracts terms and the cancellation is in the mathematics (a margin
against a difference of logits, <z, p - q> against the norms in the sparsemax
loss, the T**2 KL as a sum of q log q - q log p), the sum of the magnitudes of
those terms. Functions whose inputs go through a rounding that the formula
does not have (``s * cos`` in the cosine-margin losses) get the
condition number of that step as an extra factor; each such place says so.

Non-finite results follow the policies of ce_lib: a row whose maximum is not
finite (all ``-inf``, a ``+inf`` or a NaN entry) has NaN value and gradient;
``-inf`` logits elsewhere give the finite limits.

``test_oracle_*_torch`` additionally compare with ``torch.nn.functional`` where
a twin exists (``multi_margin_loss``; distillation as ``kl_div`` of softened
outputs); ``DIFFERENCES_FROM_TORCH`` lists, and checks, where ce_lib deliberately differs.

"API rule N" is rule N of the edge cases listed at the top of book/api.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import mpmath as mp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import ce_lib as ce

mp.mp.dps = 50
EPS = {np.float32: 2.0**-23, np.float64: 2.0**-52}
ULPS = 8  # per unit of scale; sums over C classes get C more (see _tol)
# About 2000 drawn cases in all, some 40 s for the file on its own (2 cores).
SETTINGS = settings(max_examples=160, deadline=None, derandomize=True)
TORCH_SETTINGS = settings(max_examples=100, deadline=None, derandomize=True)
NAN = mp.mpf("nan")
NEG_INF = mp.mpf("-inf")


# --------------------------------------------------------------------------- strategies


@st.composite
def cases(
    draw,
    min_classes: int = 1,
    max_classes: int = 6,
    neg_inf: bool = True,
    grid_only: bool = False,
    offsets: bool = True,
):
    """A batch of logit rows (R, C) as float array, its dtype, the layout, the targets."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    layout = draw(st.sampled_from(["1d", "2d", "2d", "kdim"]))
    n_classes = draw(st.integers(min_classes, max_classes))
    n = draw(st.integers(0, 4)) if layout != "1d" else 1
    k = draw(st.integers(1, 3)) if layout == "kdim" else 1
    rows = n * k
    y = np.asarray(
        draw(st.lists(st.integers(0, n_classes - 1), min_size=rows, max_size=rows)), dtype=np.int64
    )
    z = draw(values((rows, n_classes), dtype, y, neg_inf=neg_inf, grid_only=grid_only, offsets=offsets))
    return z, dtype, layout, n, k, y


@st.composite
def values(draw, shape, dtype, y=None, neg_inf=True, grid_only=False, offsets=True, bound=None):
    """Logit rows of ``shape`` (R, C): a grid of eighths plus an exact offset, or any floats; -inf masks."""
    rows, n_classes = shape
    size = rows * n_classes
    if grid_only or draw(st.booleans()):
        span = draw(st.sampled_from([2, 16, 512]))  # a small span makes ties
        ints = draw(st.lists(st.integers(-span, span), min_size=size, max_size=size))
        limit = 10**4 if dtype == np.float32 else 10**15
        offset = draw(st.one_of(st.just(0), st.sampled_from([limit, -limit]), st.integers(-limit, limit)))
        offset = offset if offsets else 0
        z = np.asarray(ints, dtype=np.float64).reshape(shape) / 8 + offset
        assert np.all(z.astype(dtype).astype(np.float64) == z)  # exactly representable
    else:
        width = 32 if dtype == np.float32 else 64
        bound = bound or draw(st.sampled_from([1.0, 30.0, 1e3]))
        vals = draw(st.lists(st.floats(-bound, bound, width=width), min_size=size, max_size=size))
        z = np.asarray(vals, dtype=np.float64).reshape(shape)
    if y is None:
        y = np.zeros(rows, dtype=np.int64)
    if neg_inf and rows:
        mode = draw(st.sampled_from(["none", "none", "random", "target", "others", "one_other"]))
        classes = np.arange(n_classes)
        if mode == "random":
            mask = np.asarray(draw(st.lists(st.booleans(), min_size=size, max_size=size))).reshape(shape)
            z[mask] = -np.inf
        elif mode == "target":
            z[np.arange(rows), y] = -np.inf
        elif mode == "others":  # every competitor is -inf
            z[classes != y[:, None]] = -np.inf
        elif mode == "one_other":  # a single finite competitor
            keep = (y + 1) % n_classes
            z[(classes != y[:, None]) & (classes != keep[:, None])] = -np.inf
    return z.astype(dtype)


def to_api(z: np.ndarray, y: np.ndarray, layout: str, n: int, k: int):
    """Rows (R, C) -> the array a caller passes, its target and its class axis."""
    c = z.shape[1]
    if layout == "1d":
        return z[0], y[0], -1
    if layout == "2d":
        return z, y, -1
    return np.moveaxis(z.reshape(n, k, c), -1, 1), y.reshape(n, k), 1


def from_api(g: np.ndarray, layout: str) -> np.ndarray:
    """A gradient in the caller's layout -> rows (R, C)."""
    if layout == "1d":
        return g[None, :]
    if layout == "2d":
        return g
    return np.moveaxis(g, 1, -1).reshape(-1, g.shape[1])


# --------------------------------------------------------------------------- comparison


def mpf(x: float) -> mp.mpf:
    return mp.mpf(float(x))


def mp_rows(z: np.ndarray) -> list[list[mp.mpf]]:
    return [[mpf(v) for v in row] for row in z]


def is_bad_row(row: list[mp.mpf]) -> bool:
    """No distribution: every entry -inf, or a +inf or NaN entry (API rules 2-4)."""
    return all(v == NEG_INF for v in row) or any(mp.isnan(v) or v == mp.inf for v in row)


def as_float(x: mp.mpf) -> float:
    return float(x) if not mp.isnan(x) else np.nan


def assert_exact(got, exact, scale, dtype, what: str, ulps: float = ULPS) -> None:
    """``got`` equals ``exact`` (mpmath numbers) to ``ulps * eps * scale``; same non-finite pattern."""
    got = np.asarray(got)
    assert got.dtype == dtype, f"{what}: dtype {got.dtype}, expected {np.dtype(dtype)}"
    got = got.astype(np.float64).ravel()
    ex = np.array([as_float(v) for v in np.ravel(np.asarray(exact, dtype=object))], dtype=np.float64)
    sc = np.array([float(v) for v in np.ravel(np.asarray(scale, dtype=object))], dtype=np.float64)
    assert got.shape == ex.shape, f"{what}: shape {got.shape}, expected {ex.shape}"
    nan_ok = np.isnan(got) == np.isnan(ex)
    assert nan_ok.all(), f"{what}: NaN pattern differs: got {got}, exact {ex}"
    inf = np.isinf(ex) | np.isinf(got)
    assert np.array_equal(got[inf], ex[inf]), f"{what}: infinities differ: got {got}, exact {ex}"
    fin = np.isfinite(ex)
    err = np.abs(got[fin] - ex[fin])
    # (plus a few units of the smallest subnormal: a result there has no relative precision)
    tol = ulps * EPS[dtype] * sc[fin] + ulps * np.finfo(dtype).smallest_subnormal
    if not np.all(err <= tol):
        with np.errstate(divide="ignore", invalid="ignore"):
            in_ulps = err / (EPS[dtype] * sc[fin])
        raise AssertionError(
            f"{what}: error {err} exceeds {tol} ({in_ulps} ulps of the scale); got {got}, exact {ex}"
        )


Oracle = Callable[..., tuple[list, list, list, list]]


def check_rows(fn, grad_fn, oracle: Oracle, z, dtype, layout, n, k, y, reduction, opts, ulps=ULPS):
    """Compare value (per row and reduced) and gradient of a per-row loss with its oracle."""
    x, t, axis = to_api(z, y, layout, n, k)
    values, vscale, grads, gscale = oracle(mp_rows(z), [int(v) for v in y], **opts)
    rows = len(values)
    c = z.shape[1]
    ulps = ulps + c  # sums over the classes
    got = fn(x, t, axis=axis, reduction="none", **opts)
    assert np.shape(got) == np.shape(t)
    assert_exact(got, values, vscale, dtype, f"{fn.__name__} none", ulps)
    total = mp.fsum(values) if rows else mp.mpf(0)
    tscale = mp.fsum(vscale) * max(rows, 1)
    if reduction == "sum":
        assert_exact(fn(x, t, axis=axis, reduction="sum", **opts), [total], [tscale], dtype, "sum", ulps)
    if reduction == "mean":
        mean = total / rows if rows else NAN
        assert_exact(
            fn(x, t, axis=axis, reduction="mean", **opts),
            [mean],
            [tscale / max(rows, 1)],
            dtype,
            "mean",
            ulps,
        )
    g = grad_fn(x, t, axis=axis, reduction=reduction, **opts)
    assert g.shape == x.shape and g.dtype == dtype
    factor = mp.mpf(1) / rows if reduction == "mean" and rows else mp.mpf(1)
    exact_g = [[v * factor for v in row] for row in grads]
    scale_g = [[s * factor for _ in row] for row, s in zip(grads, gscale, strict=True)]
    assert_exact(from_api(g, layout), exact_g, scale_g, dtype, f"{grad_fn.__name__} {reduction}", ulps)


def softmax_mp(row: list[mp.mpf]) -> list[mp.mpf]:
    m = max(row)
    e = [mp.exp(v - m) for v in row]
    s = mp.fsum(e)
    return [v / s for v in e]


def lse_mp(row: list[mp.mpf]) -> mp.mpf:
    """m + log1p(sum of the others): a tiny sum survives even beyond the 50 digits."""
    if not row or all(v == NEG_INF for v in row):
        return NEG_INF
    m = max(row)
    k = row.index(m)
    return m + mp.log1p(mp.fsum(mp.exp(v - m) for i, v in enumerate(row) if i != k))


def log_softmax_mp(row: list[mp.mpf], i: int) -> mp.mpf:
    """(z_i - m) - log1p(rest): no cancellation when z_i is the maximum."""
    if row[i] == NEG_INF:
        return NEG_INF
    m = max(row)
    k = row.index(m)
    return (row[i] - m) - mp.log1p(mp.fsum(mp.exp(v - m) for j, v in enumerate(row) if j != k))


def nan_row(c: int) -> list[mp.mpf]:
    return [NAN] * c


reductions = st.sampled_from(["none", "sum", "mean"])
# --------------------------------------------------------------------------- hinge family


def hinge_oracle(rows, ys, margin):
    """max(max_{i != y} z_i - z_y + m, 0); gradient e_k - e_y where positive (kinks: see the test)."""
    vals, vsc, grads, gsc = [], [], [], []
    m = mpf(margin)
    for r, y in zip(rows, ys, strict=True):
        c = len(r)
        if is_bad_row(r):
            vals.append(NAN), vsc.append(1), grads.append(nan_row(c)), gsc.append(1)
            continue
        others = [v for i, v in enumerate(r) if i != y]
        comp = max(others) if others else NEG_INF
        gap = comp - r[y] + m
        vals.append(max(gap, mp.mpf(0)))
        vsc.append(abs(comp - r[y]) + abs(m) if mp.isfinite(gap) else 1)
        g = [mp.mpf(0)] * c
        if gap > 0:
            k = max((i for i in range(c) if i != y), key=lambda i: r[i])
            g[k], g[y] = mp.mpf(1), mp.mpf(-1)
        grads.append(g), gsc.append(1)
    return vals, vsc, grads, gsc


def _within_rounding_of_zero(gap, comp, target, margin, dtype) -> bool:
    """|gap| within a few ulps of its terms: the computed sign of the gap may be either."""
    return bool(abs(gap) <= 4 * EPS[dtype] * (abs(comp - target) + abs(mpf(margin))))


def hinge_kinks(z, y, margin, dtype):
    """Rows at a kink: the gap is 0 (to rounding), or the strongest competitor is tied (gap > 0)."""
    out = []
    for r, t in zip(mp_rows(z), y, strict=True):
        if is_bad_row(r):
            out.append(False)
            continue
        others = [v for i, v in enumerate(r) if i != t]
        comp = max(others) if others else NEG_INF
        gap = comp - r[t] + mpf(margin)
        near = mp.isfinite(gap) and _within_rounding_of_zero(gap, comp, r[t], margin, dtype)
        out.append(bool(near or (gap > 0 and others.count(comp) > 1)))
    return np.array(out, dtype=bool)


def assert_hinge_subgradient(g_rows, z, y, margin, dtype):
    """At a kink, ce_lib's gradient must lie in the subdifferential: t * (sum_k w_k e_k - e_y).

    (Within rounding of gap = 0 either side of the kink is accepted: 0 <= t <= 1.)
    """
    for g, r, t in zip(g_rows, mp_rows(z), y, strict=True):
        others = [v for i, v in enumerate(r) if i != t]
        comp = max(others)
        gap = comp - r[t] + mpf(margin)
        s = -g[t]
        near = _within_rounding_of_zero(gap, comp, r[t], margin, dtype)
        assert (s == 1) if (gap > 0 and not near) else (0 <= s <= 1), (g, r, t)
        maximisers = [i for i in range(len(r)) if i != t and r[i] == comp]
        assert np.all(g[maximisers] >= 0) and np.isclose(g[maximisers].sum(), s)
        rest = [i for i in range(len(r)) if i != t and i not in maximisers]
        assert np.all(g[rest] == 0)


@SETTINGS
@given(case=cases(), margin=st.sampled_from([0.0, 1.0, 0.25, -0.5, 1e3]), reduction=reductions)
def test_oracle_hinge_loss(case, margin, reduction):
    z, dtype, layout, n, k, y = case
    kink = hinge_kinks(z, y, margin, dtype)
    x, t, axis = to_api(z, y, layout, n, k)
    if kink.any():  # compare the kink rows by subgradient, the others exactly
        g = from_api(ce.hinge_loss_grad(x, t, margin=margin, axis=axis, reduction="sum"), layout)
        assert_hinge_subgradient(g[kink].astype(np.float64), z[kink], y[kink], margin, dtype)
        values, scales, _, _ = hinge_oracle(mp_rows(z[kink]), list(y[kink]), margin)
        got = np.ravel(ce.hinge_loss(x, t, margin=margin, axis=axis, reduction="none"))[kink]
        assert_exact(got, values, scales, dtype, "hinge_loss at kinks", ULPS + z.shape[1])
        z, y = z[~kink], y[~kink]
        layout, n, k = "2d", len(y), 1
    check_rows(
        ce.hinge_loss,
        ce.hinge_loss_grad,
        hinge_oracle,
        z,
        dtype,
        layout,
        n,
        k,
        y,
        reduction,
        {"margin": margin},
    )


def lse_hinge_oracle(rows, ys, margin):
    """max(LSE_{i != y} z_i - z_y + m, 0); gradient softmax over the others minus e_y where positive."""
    vals, vsc, grads, gsc = [], [], [], []
    m = mpf(margin)
    for r, y in zip(rows, ys, strict=True):
        c = len(r)
        if is_bad_row(r):
            vals.append(NAN), vsc.append(1), grads.append(nan_row(c)), gsc.append(1)
            continue
        others = [v for i, v in enumerate(r) if i != y]
        lse = lse_mp(others)
        gap = lse - r[y] + m
        vals.append(max(gap, mp.mpf(0)))
        vsc.append(abs(lse - r[y]) + abs(m) if mp.isfinite(gap) else 1)
        g = [mp.mpf(0)] * c
        if gap > 0:
            soft = softmax_mp(others)
            g = [*soft[:y], mp.mpf(-1), *soft[y:]]
        grads.append(g), gsc.append(1)
    return vals, vsc, grads, gsc


@SETTINGS
@given(case=cases(), margin=st.sampled_from([0.0, 1.0, 0.25, -0.5, 1e3]), reduction=reductions)
def test_oracle_lse_hinge_loss(case, margin, reduction):
    z, dtype, layout, n, k, y = case
    gaps = []
    for r, label in zip(mp_rows(z), y, strict=True):
        others = [v for i, v in enumerate(r) if i != label]
        gaps.append(NAN if is_bad_row(r) else lse_mp(others) - r[label] + mpf(margin))
    # Gap within rounding of 0: at the kink any t * (softmax_others - e_y), 0 <= t <= 1, is valid.
    near = np.array([bool(mp.isfinite(v) and abs(v) < 1e-4 * (1 + abs(margin))) for v in gaps], dtype=bool)
    if near.any():
        x, t, axis = to_api(z, y, layout, n, k)
        got = np.ravel(ce.lse_hinge_loss(x, t, margin=margin, axis=axis, reduction="none"))
        g = from_api(ce.lse_hinge_loss_grad(x, t, margin=margin, axis=axis, reduction="sum"), layout)
        for label, gr, v in zip(y[near], g[near], got[near], strict=True):
            assert v >= 0
            assert -1 <= gr[label] <= 0 and np.all(np.delete(gr, label) >= 0)
        z, y = z[~near], y[~near]
        layout, n, k = "2d", len(y), 1
    check_rows(
        ce.lse_hinge_loss,
        ce.lse_hinge_loss_grad,
        lse_hinge_oracle,
        z,
        dtype,
        layout,
        n,
        k,
        y,
        reduction,
        {"margin": margin},
    )


def multi_margin_oracle(rows, ys, p, margin, weight):
    """(1/C) sum_{i != y} w_y max(0, m - z_y + z_i)^p and its closed-form gradient."""
    vals, vsc, grads, gsc = [], [], [], []
    m = mpf(margin)
    for r, y in zip(rows, ys, strict=True):
        c = len(r)
        if is_bad_row(r):
            vals.append(NAN), vsc.append(1), grads.append(nan_row(c)), gsc.append(1)
            continue
        w = mpf(weight[y]) if weight is not None else mp.mpf(1)
        # A competitor at -inf is absent: its term is 0 (also when the target is -inf).
        h = [max(m - r[y] + r[i], mp.mpf(0)) if i != y and r[i] != NEG_INF else mp.mpf(0) for i in range(c)]
        if w == 0:  # a class of weight 0 switches its samples off, also where a hinge is infinite
            h = [mp.mpf(0)] * c
        vals.append(w * mp.fsum(v**p for v in h) / c)
        terms = mp.fsum((abs(r[i] - r[y]) + abs(m)) ** p for i in range(c) if i != y and h[i] > 0)
        vsc.append(abs(w) * terms / c if mp.isfinite(vals[-1]) else 1)
        g = [w / c * p * (h[i] if p == 2 else 1) if h[i] > 0 else mp.mpf(0) for i in range(c)]
        g[y] = -mp.fsum(g)
        grads.append(g)
        gsc.append(abs(w) * (1 + (2 * max(abs(v) for v in h) if p == 2 else 0)) if mp.isfinite(g[y]) else 1)
    return vals, vsc, grads, gsc


@st.composite
def multi_margin_options(draw, n_classes: int, dtype):
    p = draw(st.sampled_from([1, 2]))
    margin = draw(st.sampled_from([1.0, 0.0, 0.3, 2.5]))
    weight = None
    if draw(st.booleans()):
        weight = np.asarray(
            draw(
                st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.25]), min_size=n_classes, max_size=n_classes)
            ),
            dtype=dtype,
        )
    return {"p": p, "margin": margin, "weight": weight}


@SETTINGS
@given(data=st.data(), case=cases(), reduction=reductions)
def test_oracle_multi_margin_loss(data, case, reduction):
    z, dtype, layout, n, k, y = case
    opts = data.draw(multi_margin_options(z.shape[1], dtype))
    if opts["p"] == 1:  # a hinge within rounding of its kink may be on either side: 0 or w_y / C
        near = np.zeros(len(y), dtype=bool)
        for j, (r, label) in enumerate(zip(mp_rows(z), y, strict=True)):
            if not is_bad_row(r):
                # (z_i - M) - (z_y - M) + m: each difference from the row max M is rounded
                top, m = max(r), mpf(opts["margin"])
                near[j] = any(
                    abs(r[i] - r[label] + m)
                    <= 4 * EPS[dtype] * (abs(r[i] - top) + abs(r[label] - top) + abs(m))
                    for i in range(len(r))
                    if i != label and r[i] != NEG_INF and r[label] != NEG_INF
                )
        if near.any():
            x, t, axis = to_api(z, y, layout, n, k)
            g = from_api(ce.multi_margin_loss_grad(x, t, axis=axis, reduction="sum", **opts), layout)
            vals, vsc, _, _ = multi_margin_oracle(mp_rows(z[near]), list(y[near]), **opts)
            got = np.ravel(ce.multi_margin_loss(x, t, axis=axis, reduction="none", **opts))[near]
            assert_exact(got, vals, vsc, dtype, "multi_margin_loss near a kink", ULPS + z.shape[1])
            c = z.shape[1]
            for row, label in zip(g[near].astype(np.float64), y[near], strict=True):
                w = 1.0 if opts["weight"] is None else float(opts["weight"][label])
                others = np.delete(row, label)
                assert np.all(np.isclose(others, 0) | np.isclose(others, w / c, rtol=16 * EPS[dtype]))
                assert np.isclose(row[label], -others.sum(), rtol=16 * EPS[dtype])
            z, y = z[~near], y[~near]
            layout, n, k = "2d", len(y), 1
    check_rows(
        ce.multi_margin_loss,
        ce.multi_margin_loss_grad,
        multi_margin_oracle,
        z,
        dtype,
        layout,
        n,
        k,
        y,
        reduction,
        opts,
    )


def _torch():
    if os.environ.get("CI") == "true":
        import torch  # noqa: F401  (CI must have it: let the import fail loudly)
    return pytest.importorskip("torch", reason="PyTorch not installed")


@pytest.mark.torch
@TORCH_SETTINGS
@given(data=st.data(), case=cases(neg_inf=False, grid_only=True, offsets=False), reduction=reductions)
def test_oracle_multi_margin_loss_torch(data, case, reduction):
    """Finite logits, a non-empty 2-D batch: the same numbers as torch (to its own rounding)."""
    torch = _torch()
    z, dtype, _layout, _n, _k, y = case
    assume(len(y) > 0)
    opts = data.draw(multi_margin_options(z.shape[1], dtype))
    zt = torch.tensor(z, requires_grad=True)
    w = None if opts["weight"] is None else torch.tensor(opts["weight"])
    out = torch.nn.functional.multi_margin_loss(
        zt, torch.tensor(y), p=opts["p"], margin=opts["margin"], weight=w, reduction=reduction
    )
    out.sum().backward()
    ours = ce.multi_margin_loss(z, y, reduction=reduction, **opts)
    grad = ce.multi_margin_loss_grad(z, y, reduction=reduction, **opts)
    scale = float(np.max(np.abs(z - z.max(axis=1, keepdims=True)))) + 3.0
    tol = 16 * EPS[dtype] * scale ** opts["p"] * 4
    np.testing.assert_allclose(ours, out.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=tol, atol=tol)


# --------------------------------------------------------------------------- z-loss


def z_loss_oracle(rows, ys):
    """LSE(z)^2, gradient 2 LSE(z) softmax(z); a row without a distribution is NaN."""
    vals, vsc, grads, gsc = [], [], [], []
    for r in rows:
        if is_bad_row(r):
            vals.append(NAN), vsc.append(1), grads.append(nan_row(len(r))), gsc.append(1)
            continue
        lse, m = lse_mp(r), max(r)
        size = abs(m) + abs(lse - m)  # LSE = m + log(sum exp(z - m)): the terms
        vals.append(lse**2), vsc.append(2 * abs(lse) * size + lse**2)
        grads.append([2 * lse * p for p in softmax_mp(r)]), gsc.append(2 * size)
    return vals, vsc, grads, gsc


def _z_loss(x, t, axis, reduction):
    return ce.z_loss(x, axis=axis, reduction=reduction)


def _z_loss_grad(x, t, axis, reduction):
    return ce.z_loss_grad(x, axis=axis, reduction=reduction)


_z_loss.__name__, _z_loss_grad.__name__ = "z_loss", "z_loss_grad"


@SETTINGS
@given(case=cases(), reduction=reductions)
def test_oracle_z_loss(case, reduction):
    check_rows(_z_loss, _z_loss_grad, z_loss_oracle, *case, reduction, {})


# --------------------------------------------------------------------------- focal


def focal_oracle(rows, ys, gamma, alpha):
    """-alpha_y (1 - p_y)^gamma log p_y and the docstring's gradient, with its limits at p_y = 0, 1."""
    vals, vsc, grads, gsc = [], [], [], []
    g_ = mpf(gamma)
    for r, y in zip(rows, ys, strict=True):
        c = len(r)
        if is_bad_row(r):
            vals.append(NAN), vsc.append(1), grads.append(nan_row(c)), gsc.append(1)
            continue
        a = mpf(alpha[y]) if alpha is not None else mp.mpf(1)
        logp = log_softmax_mp(r, y)
        p = softmax_mp(r)
        q = mp.fsum(v for i, v in enumerate(p) if i != y)  # 1 - p_y, without cancellation
        power = q**g_ if g_ else mp.mpf(1)
        if a == 0:
            vals.append(mp.mpf(0))
        else:
            vals.append(-a * power * logp)
        # Scale: the terms, and the rounding of z - max(z), eps |z_i - m| in each logit, which moves
        # the loss by the gradient times that: sum_i |g_i| |z_i - m|.
        m = max(r)
        shift = [abs(v - m) if v != NEG_INF else 0 for v in r]
        # second term gamma p_y (1 - p_y)^(gamma - 1) log p_y: 0 at p_y = 0 (p log p -> 0) and at p_y = 1
        second = g_ * p[y] * q ** (g_ - 1) * logp if (g_ and 0 < p[y] < 1) else mp.mpf(0)
        factor = a * (power - second)
        g = [factor * (p[i] - (i == y)) for i in range(c)]
        moved = mp.fsum(abs(gi) * si for gi, si in zip(g, shift, strict=True))
        vsc.append((abs(vals[-1]) * (1 + g_) + moved) if mp.isfinite(vals[-1]) else 1)
        grads.append(g), gsc.append(abs(factor) * (1 + g_) + 1e-300)
    return vals, vsc, grads, gsc


@SETTINGS
@given(
    data=st.data(),
    case=cases(),
    gamma=st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0]), st.floats(0, 5)),
    reduction=reductions,
)
def test_oracle_focal_loss(data, case, gamma, reduction):
    z, dtype, *_ = case
    alpha = None
    if data.draw(st.booleans()):
        alpha = np.asarray(
            data.draw(
                st.lists(st.sampled_from([0.0, 0.25, 1.0, 2.0]), min_size=z.shape[1], max_size=z.shape[1])
            ),
            dtype=dtype,
        )
    check_rows(
        ce.focal_loss, ce.focal_loss_grad, focal_oracle, *case, reduction, {"gamma": gamma, "alpha": alpha}
    )


def sigmoid_focal_oracle(zs, ts, alpha, gamma):
    """torchvision's formula, elementwise: alpha_t (1 - p_t)^gamma (-log p_t), p_t = sigmoid(s z)."""
    vals, vsc, grads, gsc = [], [], [], []
    g_ = mpf(gamma)
    for z, t in zip(zs, ts, strict=True):
        if mp.isnan(z):
            vals.append(NAN), vsc.append(1), grads.append(NAN), gsc.append(1)
            continue
        s = 2 * t - 1
        a = mp.mpf(1) if alpha < 0 else (mpf(alpha) if t == 1 else 1 - mpf(alpha))
        u = s * z
        sig_u = 1 / (1 + mp.exp(-u)) if u != NEG_INF else mp.mpf(0)
        sig_mu = 1 - sig_u if u < 0 else mp.exp(-u) / (1 + mp.exp(-u))  # sigma(-u), accurate for u > 0
        soft = mp.log1p(mp.exp(-u)) if u > NEG_INF else mp.inf  # softplus(-u) = -log p_t
        power = sig_mu**g_ if g_ else mp.mpf(1)
        vals.append(a * power * soft if (a and power) else mp.mpf(0))
        vsc.append(abs(vals[-1]) * (1 + g_) if mp.isfinite(vals[-1]) else 1)
        inner = (g_ * sig_u * soft if (g_ and sig_u) else mp.mpf(0)) + sig_mu  # sigma(u) softplus(-u) -> 0
        grads.append(-s * a * power * inner), gsc.append(abs(a) * power * abs(inner) * (1 + g_) + 1e-300)
    return vals, vsc, grads, gsc


@SETTINGS
@given(
    data=st.data(),
    dtype=st.sampled_from([np.float32, np.float64]),
    shape=st.sampled_from([(0,), (1,), (5,), (2, 3), (3, 1, 2)]),
    alpha=st.sampled_from([0.25, 0.0, 1.0, 0.5, -1.0]),
    gamma=st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0]), st.floats(0, 5)),
    reduction=reductions,
)
def test_oracle_sigmoid_focal_loss(data, dtype, shape, alpha, gamma, reduction):
    size = int(np.prod(shape))
    z = data.draw(values((size, 1), dtype, bound=60.0, offsets=False)).reshape(shape)
    specials = data.draw(
        st.lists(st.sampled_from([np.inf, -np.inf, np.nan, None]), min_size=size, max_size=size)
    )
    for i, v in enumerate(specials):
        if v is not None and data.draw(st.booleans()):
            z.flat[i] = v
    t = np.asarray(data.draw(st.lists(st.integers(0, 1), min_size=size, max_size=size))).reshape(shape)
    opts = {"alpha": alpha, "gamma": gamma}
    vals, vsc, grads, gsc = sigmoid_focal_oracle(
        [mpf(v) for v in z.ravel()], [int(v) for v in t.ravel()], **opts
    )
    ulps = ULPS * 2
    assert_exact(
        ce.sigmoid_focal_loss(z, t, reduction="none", **opts), vals, vsc, dtype, "sigmoid_focal none", ulps
    )
    factor = mp.mpf(1) / size if reduction == "mean" and size else mp.mpf(1)
    if reduction != "none":
        total = mp.fsum(vals) if size else mp.mpf(0)
        exact = total * factor if (size or reduction == "sum") else NAN
        got = ce.sigmoid_focal_loss(z, t, reduction=reduction, **opts)
        assert_exact(
            got, [exact], [mp.fsum(vsc) * factor * max(size, 1)], dtype, f"sigmoid_focal {reduction}", ulps
        )
    g = ce.sigmoid_focal_loss_grad(z, t, reduction=reduction, **opts)
    assert g.shape == z.shape
    assert_exact(g, [v * factor for v in grads], [v * factor for v in gsc], dtype, "sigmoid_focal grad", ulps)


# --------------------------------------------------------------------------- sparsemax and entmax


def sparsemax_mp(r: list[mp.mpf]) -> list[mp.mpf]:
    """The docstring's sort-based formula: support size k, threshold tau, max(z - tau, 0)."""
    srt = sorted(r, reverse=True)
    cums, k = mp.mpf(0), 0
    for j, v in enumerate(srt, start=1):
        cums += v
        if 1 + j * v > cums:
            k = j
    tau = (mp.fsum(srt[:k]) - 1) / k
    return [max(v - tau, mp.mpf(0)) for v in r]


def sparsemax_oracle(rows, targets):
    """<z, p - q> - |p|^2/2 + |q|^2/2 and p - q; -inf entries contribute their limits."""
    vals, vsc, grads, gsc = [], [], [], []
    for r, q in zip(rows, targets, strict=True):
        c = len(r)
        if is_bad_row(r):
            vals.append(NAN), vsc.append(1), grads.append(nan_row(c)), gsc.append(1)
            continue
        p = sparsemax_mp(r)
        m = max(r)
        shifted = [v - m for v in r]  # the formula is invariant: sum(p - q) = 0
        terms = [s * (pi - qi) if pi != qi else mp.mpf(0) for s, pi, qi in zip(shifted, p, q, strict=True)]
        norms = (mp.fsum(v**2 for v in p) + mp.fsum(v**2 for v in q)) / 2
        vals.append(mp.fsum(terms) - mp.fsum(v**2 for v in p) / 2 + mp.fsum(v**2 for v in q) / 2)
        vsc.append(mp.fsum(abs(v) for v in terms if mp.isfinite(v)) + norms + 1)
        grads.append([pi - qi for pi, qi in zip(p, q, strict=True)]), gsc.append(1)
    return vals, vsc, grads, gsc


@SETTINGS
@given(data=st.data(), case=cases(), reduction=reductions)
def test_oracle_sparsemax_loss(data, case, reduction):
    z, dtype, layout, n, k, y = case
    c = z.shape[1]
    if data.draw(st.booleans()):  # a distribution on a grid of 1/8: sums to 1 exactly
        cuts = np.sort(
            np.asarray(
                data.draw(st.lists(st.integers(0, 8), min_size=(c - 1) * len(y), max_size=(c - 1) * len(y)))
            ).reshape(len(y), c - 1),
            axis=1,
        )
        edges = np.concatenate([np.zeros((len(y), 1)), cuts, np.full((len(y), 1), 8)], axis=1)
        q = (np.diff(edges, axis=1) / 8).astype(dtype)
        assert np.all(q.sum(axis=1) == 1)
        target = q if layout != "1d" else q[0]
        if layout == "kdim":
            target = np.moveaxis(q.reshape(n, k, c), -1, 1)
    else:
        q, target = np.eye(c, dtype=dtype)[y], None
    x, t, axis = to_api(z, y, layout, n, k)
    t = t if target is None else target
    vals, vsc, grads, gsc = sparsemax_oracle(mp_rows(z), mp_rows(q))
    ulps = ULPS + 2 * c
    assert_exact(
        ce.sparsemax_loss(x, t, axis=axis, reduction="none"), vals, vsc, dtype, "sparsemax_loss", ulps
    )
    rows = len(vals)
    factor = mp.mpf(1) / rows if reduction == "mean" and rows else mp.mpf(1)
    if reduction != "none":
        exact = mp.fsum(vals) * factor if (rows or reduction == "sum") else NAN
        got = ce.sparsemax_loss(x, t, axis=axis, reduction=reduction)
        assert_exact(
            got, [exact], [mp.fsum(vsc) * factor * max(rows, 1)], dtype, f"sparsemax_loss {reduction}", ulps
        )
    g = ce.sparsemax_loss_grad(x, t, axis=axis, reduction=reduction)
    assert_exact(
        from_api(g, layout),
        [[v * factor for v in r] for r in grads],
        [[s * factor] * c for s in gsc],
        dtype,
        "sparsemax_loss_grad",
        ulps,
    )
    p = ce.sparsemax(x, axis=axis)
    exact_p = [nan_row(c) if is_bad_row(r) else sparsemax_mp(r) for r in mp_rows(z)]
    assert_exact(from_api(p, layout), exact_p, [[1] * c] * rows, dtype, "sparsemax", ulps)


def entmax_mp(r: list[mp.mpf], alpha: mp.mpf) -> tuple[list[mp.mpf], list[mp.mpf]]:
    """[(alpha - 1) z - tau]_+^(1/(alpha - 1)) with sum 1, tau by bisection to 1e-45; and scales.

    The scale of p_i is 1 plus the condition of its last step: with the row's maximum
    subtracted (as ce_lib does, exactly: the formula is invariant), v_i - tau is rounded to a few
    eps (|v_i| + |tau|), which moves p_i by c_i = (1/(alpha - 1)) p_i times that over (v_i - tau);
    the division by the sum then moves p_i by p_i sum_j c_j. (An entry just inside the support
    has v_i - tau of a few ulps of tau in float32 when alpha is large: the threshold form itself
    is ill-conditioned there.)
    """
    a = alpha - 1
    top = max(r)
    v = [a * (x - top) for x in r]
    hi = max(v)
    lo = hi - 1
    for _ in range(160):
        mid = (lo + hi) / 2
        if mp.fsum(max(x - mid, 0) ** (1 / a) for x in v if x > mid) >= 1:
            lo = mid
        else:
            hi = mid
    p = [max(x - lo, mp.mpf(0)) ** (1 / a) if x > lo else mp.mpf(0) for x in v]
    cond = [pi * (abs(x) + abs(lo)) / ((x - lo) * a) if pi > 0 else 0 for pi, x in zip(p, v, strict=True)]
    total = mp.fsum(cond)
    return p, [1 + ci + pi * total for ci, pi in zip(cond, p, strict=True)]


@SETTINGS
@given(
    case=cases(max_classes=5),
    alpha=st.one_of(st.sampled_from([1.5, 2.0, 1.25, 3.0]), st.floats(1.05, 5.0)),
    which=st.sampled_from(["entmax15", "bisect"]),
)
def test_oracle_entmax(case, alpha, which):
    """Entmax against a 160-step mpmath bisection of its defining equation (KKT: sum 1, [.]_+ form)."""
    z, dtype, layout, n, k, y = case
    x, _, axis = to_api(z, y, layout, n, k)
    if which == "entmax15":
        alpha, got = 1.5, ce.entmax15(x, axis=axis)
    else:
        got = ce.entmax_bisect(x, alpha, axis=axis)
    c = z.shape[1]
    exact, scale = [], []
    for r in mp_rows(z):
        p, sc = (nan_row(c), [1] * c) if is_bad_row(r) else entmax_mp(r, mpf(alpha))
        exact.append(p), scale.append(sc)
    assert_exact(from_api(got, layout), exact, scale, dtype, which, ULPS + 4 * c)


# --------------------------------------------------------------------------- cosine margins

_THETA_MIN = mp.acos(mpf(np.nextafter(1.0, 0.0)))


def margin_oracle(rows, ys, s, m, kind, easy_margin=False):
    """Cross-entropy on s * modified cosines (AM-Softmax: c_y - m; ArcFace: phi(c_y)), and the chain rule.

    Scales: the logits s * (...) are rounded once more than the formula has, an absolute error of
    a few eps * s * (1 + |m|) in each logit; the value moves by at most twice that, each
    probability by that times itself. So the value's scale is |loss| + s (1 + |m|) and the
    gradient's s * (1 + s (1 + |m|)) times |phi'|, plus s / sin(theta_y) for the rounding of phi'.
    """
    vals, vsc, grads, gsc = [], [], [], []
    s_, m_ = mpf(s), mpf(m)
    for r, y in zip(rows, ys, strict=True):
        c = r[y]
        if kind == "am":
            phi, dphi = c - m_, mp.mpf(1)
        else:
            theta = mp.acos(c)
            on_arc = c > 0 if easy_margin else theta + m_ < mp.pi
            if on_arc:
                th = theta if c < 1 else _THETA_MIN  # the documented value at the pole
                phi, dphi = mp.cos(theta + m_), mp.sin(th + m_) / mp.sin(th)
            else:
                phi, dphi = (c, mp.mpf(1)) if easy_margin else (c - m_ * mp.sin(m_), mp.mpf(1))
        logits = [s_ * (phi if i == y else v) for i, v in enumerate(r)]
        loss = -log_softmax_mp(logits, y)
        vals.append(loss), vsc.append(abs(loss) + s_ * (1 + abs(m_)))
        p = softmax_mp(logits)
        g = [s_ * (p[i] - (i == y)) * (dphi if i == y else 1) for i in range(len(r))]
        sin_t = mp.sqrt((1 - c) * (1 + c)) if kind == "arc" else mp.mpf(1)
        grads.append(g), gsc.append(s_ * (1 + s_ * (1 + abs(m_))) * abs(dphi) + s_ / max(sin_t, mpf(1e-8)))
    return vals, vsc, grads, gsc


@st.composite
def cosine_cases(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    layout = draw(st.sampled_from(["1d", "2d", "2d", "kdim"]))
    c = draw(st.integers(1, 5))
    n = draw(st.integers(0, 4)) if layout != "1d" else 1
    k = draw(st.integers(1, 3)) if layout == "kdim" else 1
    width = 32 if dtype == np.float32 else 64
    special = st.sampled_from([-1.0, 1.0, 0.0, 0.5])
    vals = draw(
        st.lists(st.one_of(st.floats(-1, 1, width=width), special), min_size=n * k * c, max_size=n * k * c)
    )
    y = np.asarray(draw(st.lists(st.integers(0, c - 1), min_size=n * k, max_size=n * k)), dtype=np.int64)
    return np.asarray(vals, dtype=dtype).reshape(n * k, c), dtype, layout, n, k, y


@SETTINGS
@given(
    case=cosine_cases(),
    kind=st.sampled_from(["am", "arc", "arc_easy"]),
    s=st.one_of(st.sampled_from([1.0, 30.0, 64.0]), st.floats(0.5, 64)),
    m=st.one_of(st.sampled_from([0.0, 0.35, 0.5]), st.floats(0, 1.2)),
    reduction=reductions,
)
def test_oracle_cosine_margins(case, kind, s, m, reduction):
    z, dtype, layout, n, k, y = case
    easy = kind == "arc_easy"
    if kind != "am":  # not within rounding of the switch between the arc and the fallback
        edge = 0.0 if easy else np.cos(np.pi - m)
        assume(np.all(np.abs(z[np.arange(len(y)), y].astype(np.float64) - edge) > 1e-6))
    if kind == "am":
        fn, grad, opts = ce.am_softmax_loss, ce.am_softmax_loss_grad, {"s": s, "m": m}
    else:
        fn, grad, opts = ce.arcface_loss, ce.arcface_loss_grad, {"s": s, "m": m, "easy_margin": easy}

    def oracle(rows, ys, **o):
        return margin_oracle(rows, ys, s, m, "am" if kind == "am" else "arc", easy)

    check_rows(fn, grad, oracle, z, dtype, layout, n, k, y, reduction, opts)


@SETTINGS
@given(
    data=st.data(),
    dtype=st.sampled_from([np.float32, np.float64]),
    batch=st.sampled_from([(), (2,)]),
    n=st.integers(0, 4),
    c=st.integers(1, 4),
    d=st.integers(1, 4),
)
def test_oracle_cosine_logits(data, dtype, batch, n, c, d):
    """cos = h.w / (|h| |w|) and its back-propagation (I - uu^T) G v / |h|, (I - vv^T) G^T u / |w|."""
    width = 32 if dtype == np.float32 else 64
    el = st.one_of(st.floats(-3, 3, width=width), st.sampled_from([0.0, 1.0, -2.0]))
    b = int(np.prod(batch))
    h = np.asarray(data.draw(st.lists(el, min_size=b * n * d, max_size=b * n * d)), dtype=dtype).reshape(
        *batch, n, d
    )
    w = np.asarray(data.draw(st.lists(el, min_size=b * c * d, max_size=b * c * d)), dtype=dtype).reshape(
        *batch, c, d
    )
    assume(np.all(np.linalg.norm(h, axis=-1) > 1e-3) and np.all(np.linalg.norm(w, axis=-1) > 1e-3))
    g = np.asarray(data.draw(st.lists(el, min_size=b * n * c, max_size=b * n * c)), dtype=dtype).reshape(
        *batch, n, c
    )
    hs, ws, gs = h.reshape(b, n, d), w.reshape(b, c, d), g.reshape(b, n, c)
    cos, cos_sc, gh, gh_sc, gw, gw_sc = [], [], [], [], [], []
    for hb, wb, gb in zip(hs, ws, gs, strict=True):
        H, W, G = [mp_rows(a) for a in (hb, wb, gb)]
        hn = [mp.sqrt(mp.fsum(x**2 for x in r)) for r in H]
        wn = [mp.sqrt(mp.fsum(x**2 for x in r)) for r in W]
        U = [[x / nr for x in r] for r, nr in zip(H, hn, strict=True)]
        V = [[x / nr for x in r] for r, nr in zip(W, wn, strict=True)]
        C = [[mp.fsum(a * b for a, b in zip(u, v, strict=True)) for v in V] for u in U]
        cos += [x for row in C for x in row]
        cos_sc += [1] * (n * c)
        for i in range(n):
            t = [mp.fsum(G[i][j] * V[j][e] for j in range(c)) for e in range(d)]
            dot = mp.fsum(a * b for a, b in zip(t, U[i], strict=True))
            gh += [(t[e] - dot * U[i][e]) / hn[i] for e in range(d)]
            gh_sc += [mp.fsum(abs(x) for x in G[i]) / hn[i]] * d
        for j in range(c):
            t = [mp.fsum(G[i][j] * U[i][e] for i in range(n)) for e in range(d)]
            dot = mp.fsum(a * b for a, b in zip(t, V[j], strict=True))
            gw += [(t[e] - dot * V[j][e]) / wn[j] for e in range(d)]
            gw_sc += [mp.fsum(abs(G[i][j]) for i in range(n)) / wn[j]] * d
    ulps = ULPS + 4 * (d + n + c)
    assert_exact(ce.cosine_logits(h, w), cos, cos_sc, dtype, "cosine_logits", ulps)
    grad_h, grad_w = ce.cosine_logits_grad(h, w, g)
    assert_exact(grad_h, gh, gh_sc, dtype, "cosine_logits_grad h", ulps)
    assert_exact(grad_w, gw, gw_sc, dtype, "cosine_logits_grad w", ulps)


# --------------------------------------------------------------------------- distillation


def distillation_oracle(rows, teachers, temperature):
    """T^2 KL(q || p), q = softmax(v / T), p = softmax(z / T); gradient T (p - q). q_j = 0 adds 0."""
    vals, vsc, grads, gsc = [], [], [], []
    T = mpf(temperature)
    for r, v in zip(rows, teachers, strict=True):
        c = len(r)
        if is_bad_row(r) or is_bad_row(v):
            vals.append(NAN), vsc.append(1), grads.append(nan_row(c)), gsc.append(1)
            continue
        zs, vs = [x / T for x in r], [x / T for x in v]
        lp = [log_softmax_mp(zs, i) for i in range(c)]
        lq = [log_softmax_mp(vs, i) for i in range(c)]
        q, p = softmax_mp(vs), softmax_mp(zs)
        terms = [
            qi * (a - b) if b != NEG_INF else mp.inf for qi, a, b in zip(q, lq, lp, strict=True) if qi > 0
        ]
        vals.append(T**2 * mp.fsum(terms))
        size = mp.fsum(qi * (abs(a) + abs(b)) for qi, a, b in zip(q, lq, lp, strict=True) if qi > 0)
        size += mp.fsum(pi * abs(b) for pi, b in zip(p, lp, strict=True) if pi > 0) + mp.log(c) + 1
        vsc.append(T**2 * size if mp.isfinite(vals[-1]) else 1)
        grads.append([T * (a - b) for a, b in zip(p, q, strict=True)]), gsc.append(T * (2 + mp.log(c)))
    return vals, vsc, grads, gsc


@SETTINGS
@given(
    data=st.data(),
    case=cases(),
    temperature=st.one_of(st.sampled_from([1.0, 2.0, 4.0, 0.5]), st.floats(0.05, 20)),
    reduction=reductions,
)
def test_oracle_distillation_loss(data, case, temperature, reduction):
    z, dtype, layout, n, k, y = case
    v = data.draw(values(z.shape, dtype, y))
    teacher, _, _ = to_api(v, y, layout, n, k)

    def oracle(rows, ys, temperature):
        return distillation_oracle(rows, mp_rows(v), temperature)

    def fn(x, t, axis, reduction, temperature):
        return ce.distillation_loss(x, teacher, temperature=temperature, axis=axis, reduction=reduction)

    def grad(x, t, axis, reduction, temperature):
        return ce.distillation_loss_grad(x, teacher, temperature=temperature, axis=axis, reduction=reduction)

    fn.__name__, grad.__name__ = "distillation_loss", "distillation_loss_grad"
    check_rows(fn, grad, oracle, z, dtype, layout, n, k, y, reduction, {"temperature": temperature})


@pytest.mark.torch
@TORCH_SETTINGS
@given(
    data=st.data(),
    case=cases(neg_inf=False, offsets=False),
    temperature=st.sampled_from([1.0, 2.0, 4.0, 0.5]),
)
def test_oracle_distillation_loss_torch(data, case, temperature):
    """2-D batches: T^2 kl_div(log_softmax(s/T), softmax(t/T), "batchmean"), a teacher -inf included."""
    torch = _torch()
    F = torch.nn.functional
    z, dtype, _layout, _n, _k, y = case
    assume(len(y) > 0)
    v = data.draw(values(z.shape, dtype, y, offsets=False))
    assume(not any(is_bad_row(r) for r in mp_rows(v)))
    zt = torch.tensor(z, requires_grad=True)
    out = F.kl_div(
        F.log_softmax(zt / temperature, -1),
        F.softmax(torch.tensor(v) / temperature, -1),
        reduction="batchmean",
    )
    (out * temperature**2).backward()
    ours = ce.distillation_loss(z, v, temperature=temperature)
    grad = ce.distillation_loss_grad(z, v, temperature=temperature)
    tol = {np.float32: 1e-4, np.float64: 1e-11}[dtype] * max(1.0, float(np.max(np.abs(z)))) * temperature
    np.testing.assert_allclose(ours, out.item() * temperature**2, rtol=tol, atol=tol)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=tol, atol=tol)


# --------------------------------------------------------------------------- bad inputs

_Z = np.zeros((2, 3))
_Y = np.array([0, 2])
BAD_CALLS = {
    "hinge: target out of range": (lambda: ce.hinge_loss(_Z, np.array([0, 3])), "class index 3"),
    "hinge: margin NaN": (lambda: ce.hinge_loss_grad(_Z, _Y, margin=np.nan), "margin"),
    "lse_hinge: float target": (lambda: ce.lse_hinge_loss(_Z, _Y.astype(float)), "integer dtype"),
    "lse_hinge: empty class axis": (lambda: ce.lse_hinge_loss_grad(np.zeros((2, 0)), _Y), "empty class axis"),
    "multi_margin: p = 3": (lambda: ce.multi_margin_loss(_Z, _Y, p=3), "p must be 1 or 2"),
    "multi_margin: weight shape": (lambda: ce.multi_margin_loss_grad(_Z, _Y, weight=np.ones(2)), "weight"),
    "z_loss: reduction": (lambda: ce.z_loss(_Z, reduction="avg"), "reduction"),
    "z_loss: empty class axis": (lambda: ce.z_loss_grad(np.zeros((2, 0))), "empty class axis"),
    "focal: gamma < 0": (lambda: ce.focal_loss(_Z, _Y, gamma=-1.0), "gamma"),
    "focal: alpha shape": (lambda: ce.focal_loss_grad(_Z, _Y, alpha=np.ones(4)), "weight"),
    "sigmoid_focal: target 2": (lambda: ce.sigmoid_focal_loss(_Z, np.full((2, 3), 2)), "only 0 and 1"),
    "sigmoid_focal: alpha 2": (lambda: ce.sigmoid_focal_loss_grad(_Z, np.zeros((2, 3)), alpha=2.0), "alpha"),
    "sparsemax: complex": (lambda: ce.sparsemax(_Z + 1j), "real-valued"),
    "sparsemax_loss: target shape": (lambda: ce.sparsemax_loss(_Z, np.zeros((2, 4))), "same shape"),
    "entmax15: empty class axis": (lambda: ce.entmax15(np.zeros((3, 0))), "empty class axis"),
    "entmax_bisect: alpha 1": (lambda: ce.entmax_bisect(_Z, 1.0), "alpha"),
    "am_softmax: cosine 2": (lambda: ce.am_softmax_loss(_Z + 2, _Y), r"\[-1, 1\]"),
    "arcface: s <= 0": (lambda: ce.arcface_loss_grad(_Z, _Y, s=0.0), "positive scale"),
    "cosine_logits: zero row": (lambda: ce.cosine_logits(_Z, np.ones((4, 3))), "row of zeros"),
    "cosine_logits_grad: upstream shape": (
        lambda: ce.cosine_logits_grad(np.ones((2, 3)), np.ones((4, 3)), np.ones((2, 3))),
        "upstream",
    ),
    "distillation: temperature 0": (lambda: ce.distillation_loss(_Z, _Z, temperature=0.0), "temperature"),
    "distillation: shapes": (lambda: ce.distillation_loss_grad(_Z, np.zeros((2, 4))), "same shape"),
}


@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_oracle_bad_inputs(name):
    call, match = BAD_CALLS[name]
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------- regressions
# One test per cause the oracles found; each failed before its fix (see the issue-13 report).

INF = np.inf


def test_lse_hinge_gradient_when_every_competitor_is_neg_inf():
    """Loss max(-inf - z_y + m, 0) = 0, so the gradient is 0 (was NaN: softmax over no class)."""
    z, y = np.array([[0.0, -INF, -INF], [-INF, 2.0, -INF]]), np.array([0, 1])
    np.testing.assert_array_equal(ce.lse_hinge_loss(z, y, margin=1.0, reduction="none"), [0.0, 0.0])
    np.testing.assert_array_equal(ce.lse_hinge_loss_grad(z, y, margin=1.0, reduction="sum"), np.zeros((2, 3)))


def test_multi_margin_target_and_a_competitor_at_neg_inf():
    """A -inf competitor is absent even when the target is -inf: inf and torch's gradient (was NaN)."""
    z, y = np.array([[-INF, -INF, 0.0]]), np.array([0])
    assert ce.multi_margin_loss(z, y) == INF
    np.testing.assert_array_equal(ce.multi_margin_loss_grad(z, y), [[-1 / 3, 0.0, 1 / 3]])


def test_zero_class_weight_switches_off_an_infinite_term():
    """weight 0 (alpha 0) times an infinite hinge (or -log 0) is 0 (was NaN)."""
    z, y = np.array([[-INF, 0.0, 1.0]]), np.array([0])
    w = np.array([0.0, 1.0, 1.0])
    assert ce.multi_margin_loss(z, y, weight=w) == 0.0
    np.testing.assert_array_equal(ce.multi_margin_loss_grad(z, y, weight=w), np.zeros((1, 3)))
    assert ce.focal_loss(z, y, alpha=w) == 0.0
    np.testing.assert_array_equal(ce.focal_loss_grad(z, y, alpha=w), np.zeros((1, 3)))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_gradient_at_a_neg_inf_target(gamma):
    """p_y = 0: the bracket's limit is 1 (p log p -> 0), the gradient p - e_y (was NaN)."""
    z, y = np.array([[-INF, 0.0, 1.0]]), np.array([0])
    assert ce.focal_loss(z, y, gamma=gamma) == INF
    expected = ce.softmax(z) - np.eye(3)[0]
    np.testing.assert_allclose(ce.focal_loss_grad(z, y, gamma=gamma), expected, rtol=1e-15)


def test_focal_gradient_does_not_overflow_for_small_gamma():
    """(1 - p_y)^(gamma - 1) overflowed for gamma < 1 and p_y within 1e-300 of 1."""
    z, y = np.array([[0.0, -745.0]]), np.array([0])
    g = ce.focal_loss_grad(z, y, gamma=0.01, reduction="sum")  # (a RuntimeWarning fails the test)
    q = np.exp(-745.0)  # 1 - p_y: the gradient is (1 + gamma) q^gamma (p - e_y) to first order
    np.testing.assert_allclose(g, 1.01 * q**0.01 * np.array([[-q, q]]), rtol=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 2.0, 1e-100])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_focal_at_infinite_logits(gamma, dtype):
    """p_t = 0 gives inf and the finite gradient -s alpha_t; p_t = 1 gives 0 (both were NaN)."""
    z, t = np.array([-INF, INF, INF, -INF], dtype=dtype), np.array([1, 0, 1, 0])
    loss = ce.sigmoid_focal_loss(z, t, alpha=0.25, gamma=gamma, reduction="none")
    np.testing.assert_array_equal(loss, [INF, INF, 0.0, 0.0])
    grad = ce.sigmoid_focal_loss_grad(z, t, alpha=0.25, gamma=gamma, reduction="sum")
    np.testing.assert_array_equal(grad, np.array([-0.25, 0.75, 0.0, 0.0], dtype=dtype))


def test_distillation_teacher_class_at_neg_inf():
    """q = 0 adds 0 to the KL divergence, as torch's kl_div: log(1 + e^-1) (was NaN)."""
    s, t = np.array([[0.0, 1.0]]), np.array([[-INF, 0.0]])
    np.testing.assert_allclose(
        ce.distillation_loss(s, t, temperature=1.0), np.log1p(np.exp(-1.0)), rtol=1e-15
    )
    np.testing.assert_allclose(ce.distillation_loss_grad(s, t, temperature=1.0), ce.softmax(s) - [0.0, 1.0])
    # A teacher class with q > 0, however small, where the student's logit is -inf: KL = inf.
    assert (
        ce.distillation_loss(np.array([[0.0, -INF]], np.float32), np.array([[0.0, -200.0]], np.float32))
        == INF
    )


SHIFT_INVARIANT = {
    "hinge_loss": lambda z, y: ce.hinge_loss(z, y, margin=0.75, reduction="none"),
    "hinge_loss_grad": lambda z, y: ce.hinge_loss_grad(z, y, margin=0.75),
    "lse_hinge_loss": lambda z, y: ce.lse_hinge_loss(z, y, margin=0.75, reduction="none"),
    "lse_hinge_loss_grad": lambda z, y: ce.lse_hinge_loss_grad(z, y, margin=0.75),
    "multi_margin_loss": lambda z, y: ce.multi_margin_loss(z, y, p=2, margin=0.3, reduction="none"),
    "multi_margin_loss_grad": lambda z, y: ce.multi_margin_loss_grad(z, y, p=2, margin=0.3),
    "focal_loss": lambda z, y: ce.focal_loss(z, y, gamma=0.5, reduction="none"),
    "focal_loss_grad": lambda z, y: ce.focal_loss_grad(z, y, gamma=0.5),
    "sparsemax": lambda z, y: ce.sparsemax(z / 8),
    "sparsemax_loss": lambda z, y: ce.sparsemax_loss(z / 8, y, reduction="none"),
    "sparsemax_loss_grad": lambda z, y: ce.sparsemax_loss_grad(z / 8, y),
    "entmax15": lambda z, y: ce.entmax15(z / 8),
    "entmax_bisect": lambda z, y: ce.entmax_bisect(z / 8, 1.25),
    "distillation_loss": lambda z, y: ce.distillation_loss(z, z[::-1], temperature=3.0, reduction="none"),
    "distillation_loss_grad": lambda z, y: ce.distillation_loss_grad(z, z[::-1], temperature=3.0),
}


@pytest.mark.parametrize("name", sorted(SHIFT_INVARIANT))
@pytest.mark.parametrize(("dtype", "offset"), [(np.float32, 1e4), (np.float32, -1e4), (np.float64, 1e15)])
def test_shift_invariance_is_exact(name, dtype, offset):
    """Logits on a grid, shifted by an exact offset: z - max(z) is exact, so the result is identical
    (was off by up to 3% for lse_hinge_loss at 1e15, 1000 ulps for multi_margin_loss at 1e4)."""
    rng = np.random.default_rng(13)
    z = (rng.integers(-40, 40, size=(4, 5)) / 4).astype(dtype)
    y = rng.integers(0, 5, size=4)
    fn = SHIFT_INVARIANT[name]
    np.testing.assert_array_equal(fn((z + dtype(offset)).astype(dtype), y), fn(z, y))


def test_rows_without_a_distribution_are_nan_and_neg_inf_is_zero_probability():
    """all -inf, +inf or NaN rows: NaN value and gradient (z_loss gave inf, multi_margin a 0
    gradient, sparsemax and entmax raised); -inf entries elsewhere: probability 0 (raised)."""
    z = np.array([[-INF, -INF, -INF], [INF, 0.0, 1.0], [np.nan, 0.0, 1.0], [-INF, 0.0, 0.0]])
    y = np.array([0, 1, 2, 1])
    rows = np.array([True, True, True, False])
    # (a RuntimeWarning, such as inf - inf or 0 * inf, fails the test: see filterwarnings)
    for loss, grad in [
        (ce.z_loss(z, reduction="none"), ce.z_loss_grad(z)),
        (ce.multi_margin_loss(z, y, reduction="none"), ce.multi_margin_loss_grad(z, y)),
        (ce.hinge_loss(z, y, reduction="none"), ce.hinge_loss_grad(z, y)),
        (ce.lse_hinge_loss(z, y, reduction="none"), ce.lse_hinge_loss_grad(z, y)),
        (ce.focal_loss(z, y, reduction="none"), ce.focal_loss_grad(z, y)),
        (ce.sparsemax_loss(z, y, reduction="none"), ce.sparsemax_loss_grad(z, y)),
        (ce.distillation_loss(z, z, reduction="none"), ce.distillation_loss_grad(z, z)),
    ]:
        np.testing.assert_array_equal(np.isnan(loss), rows)
        np.testing.assert_array_equal(np.isnan(grad).all(axis=1), rows)
        assert not np.isnan(grad[~rows]).any()
    for p in [ce.sparsemax(z), ce.entmax15(z), ce.entmax_bisect(z, 1.5)]:
        np.testing.assert_array_equal(np.isnan(p).all(axis=1), rows)
        np.testing.assert_allclose(p[3], [0.0, 0.5, 0.5])


# --------------------------------------------------------------------------- documented differences

_NAN_ROW = np.array([[np.nan, 0.0, 1.0]])
_ALL_NEG_INF = np.array([[-INF, -INF, -INF]])
_POS_INF = np.array([[0.0, INF, 1.0]])
_NEG_INF_TARGET = np.array([[-INF, 0.0, 1.0]])
_NEG_INF_TEACHER = np.array([[-INF, 2.0, 3.0]])  # -inf where _NEG_INF_TARGET has it
_Y0 = np.array([0])
_Y1 = np.array([1])
_KDIM_S = np.arange(12.0).reshape(2, 3, 2) / 4
_KDIM_T = _KDIM_S[:, ::-1].copy()  # the classes reversed


def _kl_batchmean(torch, s, t, temperature=2.0):
    F = torch.nn.functional
    log_p = F.log_softmax(torch.tensor(s) / temperature, 1)
    return (
        float(F.kl_div(log_p, F.softmax(torch.tensor(t) / temperature, 1), reduction="batchmean"))
        * temperature**2
    )


# name -> (one-line reason, ce_lib's result, torch's result (a function of the torch module))
DIFFERENCES_FROM_TORCH = {
    "multi_margin_loss, NaN target": (
        "NaN propagates to its row (API rule 4); torch's comparisons drop every NaN term "
        "(here all of them) and give 0",
        lambda: ce.multi_margin_loss(_NAN_ROW, _Y0),
        lambda torch: torch.nn.functional.multi_margin_loss(torch.tensor(_NAN_ROW), torch.tensor(_Y0)),
    ),
    "multi_margin_loss, NaN competitor": (
        "NaN propagates to its row (API rule 4); torch's comparison drops the NaN term, and the row "
        "gets the loss of its other terms",
        lambda: ce.multi_margin_loss(_NAN_ROW, _Y1),
        lambda torch: torch.nn.functional.multi_margin_loss(torch.tensor(_NAN_ROW), torch.tensor(_Y1)),
    ),
    "multi_margin_loss, all -inf row": (
        "no distribution: NaN (API rule 2); torch gives 0",
        lambda: ce.multi_margin_loss(_ALL_NEG_INF, _Y0),
        lambda torch: torch.nn.functional.multi_margin_loss(torch.tensor(_ALL_NEG_INF), torch.tensor(_Y0)),
    ),
    "multi_margin_loss, +inf in the row": (
        "a +inf logit makes its row NaN, as in every row function of ce_lib (API rule 3); torch: inf",
        lambda: ce.multi_margin_loss(_POS_INF, _Y0),
        lambda torch: torch.nn.functional.multi_margin_loss(torch.tensor(_POS_INF), torch.tensor(_Y0)),
    ),
    "multi_margin_loss, weight 0 on an infinite hinge": (
        "a class of weight 0 adds 0, also where its hinge is infinite; torch: 0 * inf = NaN",
        lambda: ce.multi_margin_loss(_NEG_INF_TARGET, _Y0, weight=np.array([0.0, 1.0, 1.0])),
        lambda torch: torch.nn.functional.multi_margin_loss(
            torch.tensor(_NEG_INF_TARGET),
            torch.tensor(_Y0),
            weight=torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64),
        ),
    ),
    "z_loss, all -inf row": (
        "no distribution: NaN (API rule 2); torch's logsumexp(z) ** 2 is inf",
        lambda: ce.z_loss(_ALL_NEG_INF),
        lambda torch: torch.logsumexp(torch.tensor(_ALL_NEG_INF), 1).pow(2).mean(),
    ),
    "distillation_loss, teacher and student at -inf": (
        "a teacher class at -inf adds 0 also where the student's logit is -inf (the limit); "
        "torch's kl_div: 0 * inf = NaN",
        lambda: ce.distillation_loss(_NEG_INF_TARGET, _NEG_INF_TEACHER, temperature=2.0),
        lambda torch: _kl_batchmean(torch, _NEG_INF_TARGET, _NEG_INF_TEACHER),
    ),
    "distillation_loss, 3-D input, mean": (
        "'mean' averages over every sample position; torch's batchmean divides by the first axis only",
        lambda: ce.distillation_loss(_KDIM_S, _KDIM_T, temperature=2.0, axis=1),
        lambda torch: _kl_batchmean(torch, _KDIM_S, _KDIM_T),
    ),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(DIFFERENCES_FROM_TORCH))
def test_documented_differences_from_torch(name):
    """Each documented difference is real: ce_lib and torch give different numbers (NaN counts)."""
    torch = _torch()
    _, ours, theirs = DIFFERENCES_FROM_TORCH[name]
    a, b = float(ours()), float(theirs(torch))
    assert not (a == b or (np.isnan(a) and np.isnan(b))), (name, a, b)


@pytest.mark.parametrize("fn", ["am_softmax_loss", "arcface_loss"])
@pytest.mark.parametrize("target", [0, 1])
def test_nan_cosine_makes_its_row_nan(fn, target):
    """A NaN propagates to its row (API rule 4); it used to raise "cosines must lie in [-1, 1]"."""
    c, y = np.array([[0.5, np.nan, 0.1], [0.2, 0.3, 0.9]]), np.array([target, 2])
    loss = getattr(ce, fn)(c, y, reduction="none")
    grad = getattr(ce, fn + "_grad")(c, y, reduction="sum")
    assert np.isnan(loss[0]) and np.isnan(grad[0]).all()
    assert np.isfinite(loss[1]) and np.isfinite(grad[1]).all()
