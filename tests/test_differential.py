"""Randomized differential tests: ce_lib against torch.nn.functional.

Hypothesis draws the cases the issue lists (shapes with size-1 and empty axes,
K-dim inputs with the class axis at 1 or -1, float32 and float64, offsets up to
the overflow edge, -inf masks, ties, ignored targets, class weights, label
smoothing, probability targets, every reduction, bad inputs) and compares the
value AND the gradient of ce_lib with PyTorch's.

Oracle rules
------------
* The truth is computed in float64: by torch on the row-shifted input for the
  shift-invariant functions (the logits are drawn on a grid of 1/8 so that
  ``z - max(z)`` is exact, and then the shifted problem is the same problem),
  and by mpmath (50 digits) for the elementwise functions, where torch's
  float64 is itself not exact (its softplus returns ``x`` above 20).
* ce_lib's error may be at most ``max(4 * torch's error, a few ulps of the
  result)``, where torch's error is that of torch in the same dtype on the same
  (unshifted) input: ce_lib may be better than torch, never much worse.
* Non-finite results must have exactly torch's pattern (NaN where torch has NaN,
  +-inf where it has +-inf), except for the documented deliberate differences
  listed in ``DELIBERATE_DIFFERENCES``.

``CE_DIFF_EXAMPLES`` (environment) overrides the number of examples per test,
for a long local run; the committed default keeps this file under a minute.

"API rule N" is rule N of the edge cases listed at the top of book/api.md.
"""

from __future__ import annotations

import os

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ce_lib as ce

torch = pytest.importorskip("torch", reason="PyTorch not installed: pip install torch==2.13.0")
F = torch.nn.functional
pytestmark = pytest.mark.torch


def examples(n: int) -> settings:
    """Hypothesis settings drawing ``n`` cases (``CE_DIFF_EXAMPLES`` overrides, for long local runs)."""
    return settings(max_examples=int(os.environ.get("CE_DIFF_EXAMPLES", n)), deadline=None, derandomize=True)


DTYPES = [np.float32, np.float64]

# Where ce_lib deliberately differs from torch (docstrings say so), with the reason.
DELIBERATE_DIFFERENCES = {
    "ce_grad_zero_total_weight": "mean over zero total class weight: the gradient is 0, "
    "not torch's NaN (API rule 1)",
    "ce_zero_coefficient_at_minus_inf": "a class whose coefficient q_c (target probability x weight) is 0 "
    "contributes 0 at a -inf logit (0 log 0 = 0), not torch's NaN (API rule 2)",
    "ce_ignored_row_without_softmax": "an ignored target's row has gradient 0 even if its logits "
    "have no softmax (+inf, NaN, all -inf); torch: NaN from 0 * NaN in its backward "
    "(API rule 1: ignored rows are absent)",
    "mse_no_broadcast": "mse_loss requires equal shapes (a clear ValueError) where torch broadcasts "
    "with a warning",
    "bce_logits_limits_at_inf": "binary_cross_entropy_with_logits at z = +-inf is the limit (0 or +inf), "
    "not torch's NaN from 0 * inf (API rule 2)",
    "ce_negative_label_smoothing": "label_smoothing < 0 is a ValueError; torch accepts it (only > 1 raises)",
}

# How many ulps of the result (or of the row's scale) ce_lib may be off when torch is exact.
ULPS = 8


# ---------------------------------------------------------------- comparison helpers


def _ulp(dtype) -> float:
    return float(np.finfo(dtype).eps)


def assert_same_nonfinite(ours, theirs, what=""):
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != torch's {theirs.shape}"
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs), err_msg=f"{what}: NaN pattern")
    inf_o = np.where(np.isinf(ours), np.sign(ours), 0)
    inf_t = np.where(np.isinf(theirs), np.sign(theirs), 0)
    np.testing.assert_array_equal(inf_o, inf_t, err_msg=f"{what}: inf pattern")


def assert_close_to_truth(ours, theirs, truth, dtype, scale=None, what=""):
    """``|ours - truth| <= max(4 |theirs - truth|, ULPS ulps of max(|truth|, scale))`` where finite.

    ``theirs`` is torch in the same dtype on the same input; ``truth`` is float64.
    ``scale`` (broadcast to the result) is the magnitude the result is a
    difference of (e.g. the largest gradient entry of its row), for entries
    that are small by cancellation.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        _assert_close_to_truth(ours, theirs, truth, dtype, scale, what)


def _assert_close_to_truth(ours, theirs, truth, dtype, scale, what):
    ours = np.asarray(ours, dtype=np.float64)
    theirs = np.asarray(theirs, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    assert_same_nonfinite(ours, truth, what + " (vs the float64 truth)")
    fin = np.isfinite(truth)
    if not fin.any():
        return
    mag = np.abs(truth)
    if scale is not None:
        mag = np.maximum(mag, np.broadcast_to(np.abs(scale), mag.shape))
    tiny = float(np.finfo(dtype).smallest_subnormal)
    with np.errstate(invalid="ignore"):
        torch_err = np.where(np.isfinite(theirs), np.abs(theirs - truth), np.inf)
    allowed = np.maximum(4 * torch_err, ULPS * _ulp(dtype) * mag + tiny)
    err = np.abs(ours - truth)
    bad = fin & ~(err <= allowed)
    if bad.any():
        i = np.flatnonzero(bad)[:5]
        raise AssertionError(
            f"{what}: ce_lib off by {err[bad].max():.3g}; at {i}: ours={ours.flat[i]}, "
            f"truth={truth.flat[i]}, torch={theirs.flat[i]}, allowed={allowed.flat[i]}"
        )


def t(a, requires_grad=False):
    return torch.tensor(np.asarray(a), requires_grad=requires_grad)


def torch_value_and_grad(fn, x, *args, **kwargs):
    """Value of a torch function and the gradient of its sum (NaN-free upstream of 1s)."""
    xt = t(x, requires_grad=True)
    out = fn(xt, *args, **kwargs)
    if out.requires_grad:
        out.sum().backward()
    grad = xt.grad.numpy() if xt.grad is not None else np.zeros_like(x)
    return out.detach().numpy(), grad


# ---------------------------------------------------------------- strategies

GRID = 8  # logits are multiples of 1/GRID so that shifting a row by its max is exact


def overflow_edge(dtype) -> float:
    return float(np.floor(np.log(np.finfo(dtype).max) * GRID) / GRID)


@st.composite
def row_values(draw, dtype, shape, class_axis, allow_nonfinite=True):
    """Logits of ``shape`` on a 1/8 grid, with offsets, ties, -inf masks, and sometimes +inf/NaN."""
    size = int(np.prod(shape))
    spread = draw(st.sampled_from([1, 4, 30, 200]))
    ints = draw(st.lists(st.integers(-spread * GRID, spread * GRID), min_size=size, max_size=size))
    z = np.array(ints, dtype=np.float64).reshape(shape) / GRID
    if draw(st.booleans()):  # ties: quantize coarsely
        z = np.round(z / 2) * 2
    edge = overflow_edge(dtype)
    big = 1e4 if dtype == np.float32 else 1e15
    kind = draw(st.sampled_from(["none", "small", "big", "edge", "lse_edge", "neg_edge"]))
    if kind == "small":
        z = z + draw(st.integers(-100, 100))
    elif kind == "big":
        z = z + draw(st.sampled_from([big, -big, big / 8, -big / 3]))
        z = np.round(z * GRID) / GRID
    elif kind == "edge":  # the largest logit near log(finfo.max)
        z = z - z.max(initial=0) + edge
    elif kind == "lse_edge":  # a row whose logsumexp is near log(finfo.max)
        n = shape[class_axis] if shape else 1
        z = np.zeros(shape) + edge - float(np.floor(np.log(max(n, 1)) * GRID) / GRID)
    elif kind == "neg_edge":
        z = z + float(np.round(-edge * 1.5))
    if allow_nonfinite and size and z.ndim:
        mask = draw(st.sampled_from(["none", "some", "all_but_one", "all", "posinf", "nan"]))
        zc = np.moveaxis(z, class_axis, -1)
        if mask == "some":
            sel = np.array(draw(st.lists(st.booleans(), min_size=size, max_size=size))).reshape(zc.shape)
            zc[sel] = -np.inf
        elif mask == "all_but_one":
            keep = draw(st.integers(0, zc.shape[-1] - 1))
            zc[..., [c for c in range(zc.shape[-1]) if c != keep]] = -np.inf
        elif mask == "all":
            zc.reshape(-1, zc.shape[-1])[0] = -np.inf
        elif mask in ("posinf", "nan"):
            zc.flat[draw(st.integers(0, size - 1))] = np.inf if mask == "posinf" else np.nan
        z = np.moveaxis(zc, -1, class_axis)
    return z.astype(dtype)


@st.composite
def logits_and_axis(draw, min_rank=1, max_rank=4, allow_empty=True):
    dtype = draw(st.sampled_from(DTYPES))
    rank = draw(st.integers(min_rank, max_rank))
    lo = 0 if allow_empty else 1
    shape = tuple(draw(st.lists(st.integers(lo, 5), min_size=rank, max_size=rank)))
    axis = draw(st.sampled_from([-1, 1] if rank > 1 else [-1, 0]))
    ax = axis % rank
    if shape[ax] == 0:  # the class axis itself is never empty here (tested as a bad input)
        shape = (*shape[:ax], draw(st.integers(1, 5)), *shape[ax + 1 :])
    z = draw(row_values(dtype, shape, ax))
    return z, axis, dtype


def exact_shift(z, axis):
    """``z - max`` per slice (max over finite entries; 0 for none): exact on the grid."""
    zd = np.asarray(z, dtype=np.float64)
    if zd.ndim == 0:
        return zd, np.zeros_like(zd)
    fin = np.where(np.isfinite(zd), zd, -np.inf)
    m = np.max(fin, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(invalid="ignore"):
        return zd - m, m


# ---------------------------------------------------------------- softmax family


LD = np.longdouble  # 64-bit significand on x86-64: 11 bits more than float64, for the truth


def ld_softmax_parts(z, axis):
    """Softmax family in extended precision: ``(softmax, log_softmax, logsumexp)`` (as float64).

    Computed on the exactly shifted row, with the largest term's 1 kept apart
    (``log S = log1p(rest)``), so every result is accurate to far below a float64 ulp.
    Rows with a non-finite maximum give NaN here (the caller uses torch's pattern there).
    """
    shifted, m = exact_shift(z, axis)
    zs = shifted.astype(LD)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(zs)
        top = np.argmax(np.where(np.isnan(zs), -np.inf, zs), axis=axis, keepdims=True)
        others = e.copy()
        np.put_along_axis(others, top, 0, axis=axis)  # the largest term, exp(0) = 1, kept apart
        rest = np.sum(others, axis=axis, keepdims=True)
        log_s = np.log1p(rest)
        return (
            (e / (1 + rest)).astype(np.float64),
            (zs - log_s).astype(np.float64),
            np.squeeze(m.astype(LD) + log_s, axis=axis).astype(np.float64),
        )


def check_softmax_family(case):
    z, axis, dtype = case
    shifted, m = exact_shift(z, axis)
    truths = ld_softmax_parts(z, axis)
    for (name, ours_fn, torch_fn), ld_truth in zip(
        [
            ("softmax", ce.softmax, lambda x: F.softmax(x, dim=axis)),
            ("log_softmax", ce.log_softmax, lambda x: F.log_softmax(x, dim=axis)),
            ("logsumexp", ce.logsumexp, lambda x: torch.logsumexp(x, dim=axis)),
        ],
        truths,
        strict=True,
    ):
        ours = ours_fn(z, axis=axis)
        theirs = torch_fn(t(z)).numpy()
        assert ours.dtype == dtype and ours.shape == theirs.shape, name
        torch_truth = torch_fn(t(shifted)).numpy()
        if name == "logsumexp":
            torch_truth = torch_truth + np.squeeze(m, axis=axis)
        # torch's float64 on the shifted row gives the non-finite pattern; extended precision the digits
        truth = np.where(np.isfinite(torch_truth) & np.isfinite(ld_truth), ld_truth, torch_truth)
        assert_same_nonfinite(ours, theirs, name)
        assert_close_to_truth(ours, theirs, truth, dtype, what=name)


def check_softmax_family_zero_d(dtype, axis, value):
    x = np.asarray(value / GRID, dtype=dtype)
    for ours_fn, torch_fn in [
        (ce.softmax, lambda v: F.softmax(v, dim=axis)),
        (ce.log_softmax, lambda v: F.log_softmax(v, dim=axis)),
        (ce.logsumexp, lambda v: torch.logsumexp(v, dim=axis)),
    ]:
        ours = ours_fn(x, axis=axis)
        theirs = torch_fn(t(x)).numpy()
        assert np.shape(ours) == theirs.shape == ()
        np.testing.assert_array_equal(ours, theirs)


# ---------------------------------------------------------------- elementwise


def _mp_elementwise(fn, x):
    mpmath.mp.dps = 50
    out = np.empty(np.shape(x))
    for i, v in enumerate(np.asarray(x, dtype=np.float64).flat):
        out.flat[i] = float(fn(mpmath.mpf(v))) if np.isfinite(v) else np.nan
    return out


def _mp_sigmoid(v):
    return 1 / (1 + mpmath.exp(-v))


def _mp_softplus(v):
    return mpmath.log1p(mpmath.exp(v))


def _mp_log_sigmoid(v):
    return -mpmath.log1p(mpmath.exp(-v))


@st.composite
def elementwise_input(draw, allow_zero_d=True):
    dtype = draw(st.sampled_from(DTYPES))
    rank = draw(st.integers(0 if allow_zero_d else 1, 3))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=rank, max_size=rank)))
    size = int(np.prod(shape))
    scale = draw(st.sampled_from([1.0, 10.0, 50.0, 800.0]))
    vals = draw(st.lists(st.floats(-scale, scale, allow_nan=False), min_size=size, max_size=size))
    x = np.array(vals, dtype=np.float64).reshape(shape)
    if size and draw(st.booleans()):
        x.flat[draw(st.integers(0, size - 1))] = draw(st.sampled_from([np.inf, -np.inf, np.nan]))
    return x.astype(dtype), dtype


def check_elementwise_functions(case):
    x, dtype = case
    for name, ours_fn, torch_fn, mp_fn, inf_limits in [
        ("sigmoid", ce.sigmoid, torch.sigmoid, _mp_sigmoid, {np.inf: 1.0, -np.inf: 0.0}),
        ("softplus", ce.softplus, F.softplus, _mp_softplus, {np.inf: np.inf, -np.inf: 0.0}),
        ("log_sigmoid", ce.log_sigmoid, F.logsigmoid, _mp_log_sigmoid, {np.inf: 0.0, -np.inf: -np.inf}),
    ]:
        ours = ours_fn(x)
        theirs = torch_fn(t(x)).numpy()
        assert ours.dtype == dtype and ours.shape == theirs.shape, name
        truth = _mp_elementwise(mp_fn, x)
        for v, lim in inf_limits.items():
            truth = np.where(np.asarray(x, dtype=np.float64) == v, lim, truth)
        assert_same_nonfinite(ours, theirs, name)
        assert_close_to_truth(ours, theirs, truth, dtype, what=name)


# ---------------------------------------------------------------- binary cross-entropy and mse

REDUCTIONS = ["mean", "sum", "none"]


def _reduce_truth(per, reduction):
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else (per.mean() if per.size else np.nan)


def _grad_scale_truth(reduction, n):
    return (1.0 / n if n else 0.0) if reduction == "mean" else 1.0


@st.composite
def bce_logits_case(draw):
    x, dtype = draw(elementwise_input())
    y = np.array(
        draw(st.lists(st.sampled_from([0.0, 1.0, 0.25, 0.5, 0.875]), min_size=x.size, max_size=x.size))
    )
    y = y.reshape(x.shape).astype(dtype)
    w = pw = None
    last = x.shape[-1] if x.ndim else 1
    if draw(st.booleans()):
        w = np.array(
            draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=last, max_size=last)), dtype
        )
        w = w.reshape(x.shape[-1:])
    if draw(st.booleans()):
        pw = np.array(
            draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=last, max_size=last)), dtype
        )
        pw = pw.reshape(x.shape[-1:])
    return x, y, w, pw, draw(st.sampled_from(REDUCTIONS)), dtype


def _mp_bce_logits(z, y, w, pw):
    """Per-element loss and d/dz, 50 digits: w [pw y softplus(-z) + (1 - y) softplus(z)].

    At z = +-inf, the limits (a term with coefficient 0 is absent).
    """
    if np.isnan(z):
        return np.nan, np.nan
    if np.isinf(z):
        pos = np.inf if z < 0 and pw * y != 0 else 0.0
        neg = np.inf if z > 0 and 1 - y != 0 else 0.0
        loss = 0.0 if w == 0 else w * (pos + neg)
        return loss, float(w * ((1 - y) if z > 0 else -pw * y))
    z, y, w, pw = (mpmath.mpf(float(v)) for v in (z, y, w, pw))
    s = 1 / (1 + mpmath.exp(-z))
    loss = w * (pw * y * mpmath.log1p(mpmath.exp(-z)) + (1 - y) * mpmath.log1p(mpmath.exp(z)))
    grad = w * ((1 - y) * s - pw * y * (1 - s))
    return float(loss), float(grad)


def check_binary_cross_entropy_with_logits(case):
    x, y, w, pw, reduction, dtype = case
    opts = dict(reduction=reduction)
    ours = ce.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw, **opts)
    ours_grad = ce.binary_cross_entropy_with_logits_grad(x, y, weight=w, pos_weight=pw, **opts)
    tw = None if w is None else t(w)
    tpw = None if pw is None else t(pw)
    theirs, theirs_grad = torch_value_and_grad(
        F.binary_cross_entropy_with_logits, x, t(y), weight=tw, pos_weight=tpw, **opts
    )
    assert np.shape(ours) == theirs.shape and ours_grad.shape == x.shape
    assert np.asarray(ours).dtype == dtype and ours_grad.dtype == dtype
    if not np.isinf(x).any():  # else "bce_logits_limits_at_inf"
        assert_same_nonfinite(ours, theirs, "bce_logits")
    assert_same_nonfinite(ours_grad, theirs_grad, "bce_logits grad")
    wb = np.broadcast_to(1.0 if w is None else w, x.shape).astype(np.float64)
    pwb = np.broadcast_to(1.0 if pw is None else pw, x.shape).astype(np.float64)
    per = np.empty(x.shape)
    g = np.empty(x.shape)
    mpmath.mp.dps = 50
    for i in range(x.size):
        per.flat[i], g.flat[i] = _mp_bce_logits(x.flat[i], y.flat[i], wb.flat[i], pwb.flat[i])
    assert_close_to_truth(ours, theirs, _reduce_truth(per, reduction), dtype, what="bce_logits")
    g_truth = g * _grad_scale_truth(reduction, x.size)
    scale = np.abs(wb * np.maximum(pwb, 1)) * _grad_scale_truth(reduction, x.size)
    assert_close_to_truth(ours_grad, theirs_grad, g_truth, dtype, scale=scale, what="bce_logits grad")


@st.composite
def bce_probs_case(draw):
    dtype = draw(st.sampled_from(DTYPES))
    rank = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=rank, max_size=rank)))
    size = int(np.prod(shape))
    probs = st.sampled_from([0.0, 1.0, 1e-30, 1e-8, 0.125, 0.5, 0.75, 1 - 2**-20, 0.999])
    a = np.array(draw(st.lists(probs, min_size=size, max_size=size))).reshape(shape).astype(dtype)
    y = np.array(draw(st.lists(probs, min_size=size, max_size=size))).reshape(shape).astype(dtype)
    w = None
    if draw(st.booleans()) and rank:
        w = np.array(draw(st.lists(st.sampled_from([0.0, 0.5, 2.0]), min_size=shape[-1], max_size=shape[-1])))
        w = w.astype(dtype)
    return a, y, w, draw(st.sampled_from(REDUCTIONS)), dtype


def check_binary_cross_entropy(case):
    a, y, w, reduction, dtype = case
    opts = dict(reduction=reduction)
    ours = ce.binary_cross_entropy(a, y, weight=w, **opts)
    ours_grad = ce.binary_cross_entropy_grad(a, y, weight=w, **opts)
    theirs, theirs_grad = torch_value_and_grad(
        F.binary_cross_entropy, a, t(y), weight=None if w is None else t(w), **opts
    )
    truth, truth_grad = torch_value_and_grad(
        F.binary_cross_entropy,
        a.astype(np.float64),
        t(y.astype(np.float64)),
        weight=None if w is None else t(w.astype(np.float64)),
        **opts,
    )
    assert np.shape(ours) == theirs.shape and ours_grad.shape == a.shape
    assert np.asarray(ours).dtype == dtype and ours_grad.dtype == dtype
    assert_same_nonfinite(ours, theirs, "bce")
    assert_same_nonfinite(ours_grad, theirs_grad, "bce grad")
    assert_close_to_truth(ours, theirs, truth, dtype, what="bce")
    assert_close_to_truth(ours_grad, theirs_grad, truth_grad, dtype, what="bce grad")


def check_mse_loss(case, reduction, seed):
    a, dtype = case
    rng = np.random.default_rng(seed)
    y = np.round(rng.normal(scale=4, size=a.shape) * GRID) / GRID
    y = y.astype(dtype)
    ours = ce.mse_loss(a, y, reduction=reduction)
    ours_grad = ce.mse_loss_grad(a, y, reduction=reduction)
    theirs, theirs_grad = torch_value_and_grad(F.mse_loss, a, t(y), reduction=reduction)
    truth, truth_grad = torch_value_and_grad(
        F.mse_loss, a.astype(np.float64), t(y.astype(np.float64)), reduction=reduction
    )
    assert np.shape(ours) == theirs.shape and ours_grad.shape == a.shape
    assert_same_nonfinite(ours, theirs, "mse")
    assert_same_nonfinite(ours_grad, theirs_grad, "mse grad")
    assert_close_to_truth(ours, theirs, truth, dtype, what="mse")
    assert_close_to_truth(ours_grad, theirs_grad, truth_grad, dtype, what="mse grad")


# ---------------------------------------------------------------- cross-entropy


@st.composite
def cross_entropy_case(draw):
    z, axis, dtype = draw(logits_and_axis(min_rank=1, max_rank=4))
    ax = axis % z.ndim
    n_classes = z.shape[ax]
    batch_shape = z.shape[:ax] + z.shape[ax + 1 :]
    size = int(np.prod(batch_shape))
    opts = dict(reduction=draw(st.sampled_from(REDUCTIONS)))
    if draw(st.booleans()):
        opts["label_smoothing"] = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    if draw(st.booleans()):
        w = draw(st.lists(st.sampled_from([0.0, 0.25, 1.0, 3.0]), min_size=n_classes, max_size=n_classes))
        if draw(st.integers(0, 9)) == 0:
            w = [0.0] * n_classes
        opts["weight"] = np.array(w, dtype=dtype)
    if draw(st.integers(0, 3)) == 0:  # probability targets, some rows with zeros
        raw = np.array(
            draw(st.lists(st.sampled_from([0.0, 0.0, 1.0, 2.0, 5.0]), min_size=z.size, max_size=z.size)),
            dtype=np.float64,
        ).reshape(z.shape)
        tot = raw.sum(axis=ax, keepdims=True)
        target = np.where(tot > 0, raw / np.where(tot > 0, tot, 1), 1.0 / n_classes).astype(dtype)
    else:
        labels = draw(st.lists(st.integers(0, n_classes - 1), min_size=size, max_size=size))
        target = np.array(labels, dtype=np.int64).reshape(batch_shape)
        ignore = draw(st.sampled_from(["none", "some", "all", "custom"]))
        if ignore == "some" and size:
            target.flat[draw(st.integers(0, size - 1))] = -100
        elif ignore == "all":
            target[...] = -100
        elif ignore == "custom" and size:
            opts["ignore_index"] = int(target.flat[0])
        if z.ndim and size and draw(st.booleans()):  # the target's own logit is -inf
            zc = np.moveaxis(z, ax, -1).reshape(-1, n_classes)
            row = draw(st.integers(0, size - 1))
            if target.flat[row] >= 0:
                zc[row, target.flat[row]] = -np.inf
                z = np.moveaxis(zc.reshape(np.moveaxis(z, ax, -1).shape), -1, ax).copy()
    return z, target, axis, opts, dtype


def _torch_ce(z, target, axis, opts):
    """torch's value and gradient, with the class axis moved to 1 (torch's layout)."""
    ax = axis % z.ndim
    zt = np.moveaxis(z, ax, 1) if z.ndim > 1 else z
    tt = np.moveaxis(target, ax, 1) if target.dtype.kind == "f" and z.ndim > 1 else target
    kw = dict(opts)
    if "weight" in kw:
        kw["weight"] = t(kw["weight"])
    value, grad = torch_value_and_grad(F.cross_entropy, np.array(zt), t(np.array(tt)), **kw)
    return value, (np.moveaxis(grad, 1, ax) if z.ndim > 1 else grad)


def ce_coefficients(z, target, axis, opts):
    """torch's cross-entropy as ``sum_c q_c (-log p_c)``.

    Returns ``(q (class axis last), kept rows, the mean's denominator)``.
    """
    ax = axis % z.ndim
    n_classes = z.shape[ax]
    eps = LD(opts.get("label_smoothing", 0.0))
    w = np.asarray(opts.get("weight", np.ones(n_classes)), dtype=np.float64).astype(LD)
    if target.dtype.kind == "f":
        q = w * ((1 - eps) * np.moveaxis(target, ax, -1).astype(LD) + eps / n_classes)
        return q, np.ones(q.shape[:-1], dtype=bool), LD(np.prod(q.shape[:-1]))
    keep = target != opts.get("ignore_index", -100)
    y = np.where(keep, target, 0)
    onehot = np.eye(n_classes, dtype=LD)[y]
    q = keep[..., None] * ((1 - eps) * onehot * w + eps / n_classes * w)
    return q, keep, np.where(keep, w[y], 0).sum()


def ld_cross_entropy(z, target, axis, opts):
    """Cross-entropy and its gradient in extended precision, torch's formulas (as float64).

    ``ell = sum_c q_c (LSE - z_c)`` with ``LSE - z_c = (max - z_c) + log1p(rest)`` (no cancellation),
    and ``g_c = (sum_{k != c} q_k) p_c - q_c sum_{k != c} p_k`` (no cancellation at p_c -> 1).
    """
    ax = axis % z.ndim
    zs = np.moveaxis(exact_shift(z, ax)[0], ax, -1).astype(LD)
    n_classes = zs.shape[-1]
    q, keep, denominator = ce_coefficients(z, target, axis, opts)
    others = 1 - np.eye(n_classes, dtype=LD)  # others[c, k] = [k != c]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        e = np.exp(zs)
        top = np.argmax(np.where(np.isnan(zs), -np.inf, zs), axis=-1)[..., None]
        rest = np.sum(np.where(np.arange(n_classes) == top, 0, e), axis=-1, keepdims=True)
        e_top = np.take_along_axis(e, top, -1)  # 1, unless the row has no finite entry
        total = e_top + rest
        log_total = np.where(e_top == 1, np.log1p(rest), np.log(total))
        per = np.sum(np.where(q != 0, q * (-zs + log_total), 0), axis=-1)
        undefined = ~np.isfinite(np.max(zs, axis=-1, initial=-np.inf))  # no softmax: a NaN loss
        per = np.where(keep & undefined, np.nan, np.where(keep, per, 0))
        p = e / total
        p_others = (e[..., None, :] * others).sum(-1) / total  # 1 - p_c, as a sum
        q_others = (q[..., None, :] * others).sum(-1)
        grad = q_others * p - q * p_others
        grad_scale = q_others * p + q * p_others  # what the gradient is a difference of
        if target.dtype.kind != "f":  # an ignored row is absent ("ce_ignored_row_without_softmax")
            grad = np.where(keep[..., None], grad, 0)
        reduction = opts.get("reduction", "mean")
        if reduction == "mean":
            value = per.sum() / denominator if denominator else np.nan  # a mean over zero terms
            scale = 1 / denominator if denominator else 0  # and then gradient 0 (API rule 1)
            grad, grad_scale = grad * scale, grad_scale * scale
        else:
            value = per.sum() if reduction == "sum" else per
    grad, grad_scale = (np.moveaxis(g, -1, ax).astype(np.float64) for g in (grad, grad_scale))
    return np.asarray(value, dtype=np.float64), grad, grad_scale


def torch_with_differences(z, target, axis, opts, value, grad, ld_value, ld_grad):
    """torch's ``(value, grad)`` with ce_lib's documented deliberate differences applied, and their names."""
    ax = axis % z.ndim
    zc = np.moveaxis(np.asarray(z, dtype=np.float64), ax, -1)
    q, keep, denominator = ce_coefficients(z, target, axis, opts)
    with np.errstate(invalid="ignore"):
        undefined = ~np.isfinite(np.max(zc, axis=-1, initial=-np.inf))
    applied = set()
    zero_at_minus_inf = np.any((q == 0) & (zc == -np.inf), axis=-1) & keep & ~undefined
    if target.dtype.kind != "f" and opts.get("label_smoothing", 0.0) == 1.0:  # torch: (1 - 1) * (-log 0)
        z_y = np.take_along_axis(zc, np.where(keep, target, 0)[..., None], -1)[..., 0]
        zero_at_minus_inf |= keep & ~undefined & (z_y == -np.inf)
    if zero_at_minus_inf.any():
        applied.add("ce_zero_coefficient_at_minus_inf")
        if opts.get("reduction", "mean") == "none":
            value = np.where(zero_at_minus_inf, ld_value, value)
        else:
            value = ld_value
    g = np.moveaxis(grad, ax, -1)
    if (undefined & ~keep).any():
        applied.add("ce_ignored_row_without_softmax")
        g = np.where((undefined & ~keep)[..., None], 0.0, g)
    if opts.get("reduction", "mean") == "mean" and keep.any() and denominator == 0:
        applied.add("ce_grad_zero_total_weight")
        g = np.moveaxis(ld_grad, ax, -1)
    return value, np.moveaxis(g, -1, ax), applied


def check_cross_entropy(case):
    z, target, axis, opts, dtype = case
    ours = ce.cross_entropy(z, target, axis=axis, **opts)
    ours_grad = ce.cross_entropy_grad(z, target, axis=axis, **opts)
    both = ce.cross_entropy_value_and_grad(z, target, axis=axis, **opts)
    # the three entry points agree exactly
    np.testing.assert_array_equal(both[0], ours)
    np.testing.assert_array_equal(both[1], ours_grad)
    assert np.asarray(ours).dtype == dtype and ours_grad.dtype == dtype and ours_grad.shape == z.shape

    shifted, _ = exact_shift(z, axis % z.ndim)
    opts64 = dict(opts)
    if "weight" in opts64:
        opts64["weight"] = opts64["weight"].astype(np.float64)
    t64 = target.astype(np.float64) if target.dtype.kind == "f" else target
    ld_value, ld_grad, grad_scale = ld_cross_entropy(z, target, axis, opts)
    theirs, theirs_grad, _ = torch_with_differences(
        z, target, axis, opts, *_torch_ce(z, target, axis, opts), ld_value, ld_grad
    )
    torch_truth, torch_truth_grad, applied = torch_with_differences(
        z, target, axis, opts, *_torch_ce(shifted, t64, axis, opts64), ld_value, ld_grad
    )
    assert applied <= set(DELIBERATE_DIFFERENCES)
    # torch's float64 on the shifted input gives the non-finite pattern; extended precision the digits
    truth = np.where(np.isfinite(torch_truth) & np.isfinite(ld_value), ld_value, torch_truth)
    truth_grad = np.where(np.isfinite(torch_truth_grad) & np.isfinite(ld_grad), ld_grad, torch_truth_grad)
    assert np.shape(ours) == np.shape(theirs)
    assert_same_nonfinite(ours, theirs, "cross_entropy")
    assert_close_to_truth(ours, theirs, truth, dtype, what="cross_entropy")
    assert_same_nonfinite(ours_grad, theirs_grad, "cross_entropy_grad")
    scale = np.where(np.isfinite(grad_scale), grad_scale, 0)
    assert_close_to_truth(ours_grad, theirs_grad, truth_grad, dtype, scale=scale, what="cross_entropy_grad")


# ---------------------------------------------------------------- bad inputs: both must reject


def _raises(fn):
    try:
        fn()
    except (ValueError, RuntimeError, IndexError, TypeError):
        return True
    return False


@st.composite
def bad_cross_entropy_case(draw):
    dtype = draw(st.sampled_from(DTYPES))
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    z = np.zeros((n, c), dtype=dtype)
    y = np.zeros(n, dtype=np.int64)
    opts = {}
    kinds = ["label_high", "label_negative", "target_shape", "weight_shape", "smoothing", "empty_class_axis"]
    kind = draw(st.sampled_from(kinds))
    if kind == "label_high":
        y[draw(st.integers(0, n - 1))] = c + draw(st.integers(0, 3))
    elif kind == "label_negative":
        y[draw(st.integers(0, n - 1))] = draw(st.sampled_from([-1, -2, -99]))
    elif kind == "target_shape":
        y = np.zeros(n + draw(st.integers(1, 3)), dtype=np.int64)
    elif kind == "weight_shape":
        opts["weight"] = np.ones(c + draw(st.integers(1, 2)), dtype=dtype)
    elif kind == "smoothing":
        opts["label_smoothing"] = draw(st.sampled_from([1.5, 2.0]))
    else:
        z = np.zeros((n, 0), dtype=dtype)
    return z, y, opts


def check_cross_entropy_bad_inputs_rejected_by_both(case):
    z, y, opts = case
    topts = dict(opts)
    if "weight" in topts:
        topts["weight"] = t(topts["weight"])
    assert _raises(lambda: F.cross_entropy(t(z), t(y), **topts))
    for fn in (ce.cross_entropy, ce.cross_entropy_grad, ce.cross_entropy_value_and_grad):
        with pytest.raises(ValueError):
            fn(z, y, **opts)


def check_binary_cross_entropy_bad_probs_rejected_by_both(dtype, bad, n):
    a = np.full(n, 0.5, dtype=dtype)
    a[-1] = bad
    y = np.zeros(n, dtype=dtype)
    assert _raises(lambda: F.binary_cross_entropy(t(a), t(y)))
    with pytest.raises(ValueError):
        ce.binary_cross_entropy(a, y)
    with pytest.raises(ValueError):
        ce.binary_cross_entropy_grad(a, y)


# ---------------------------------------------------------------- regression tests, one per cause


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_with_posinf_or_nan_is_nan_without_warnings(dtype):
    """Cause: a +inf logit left the other entries of its softmax row at 0 (torch: NaN row), and a
    row with +inf or NaN next to large finite logits overflowed exp (a RuntimeWarning)."""
    edge = overflow_edge(dtype)
    z = np.array([[np.inf, 0.25, edge], [np.nan, edge, edge - 1], [1.0, 2.0, 3.0]], dtype=dtype)
    for ours_fn, torch_fn in [(ce.softmax, F.softmax), (ce.log_softmax, F.log_softmax)]:
        ours = ours_fn(z, axis=-1)  # RuntimeWarning is an error in this suite
        theirs = torch_fn(t(z), dim=-1).numpy()
        assert np.isnan(ours[:2]).all() and np.isfinite(ours[2]).all()
        assert_same_nonfinite(ours, theirs)
    np.testing.assert_array_equal(ce.logsumexp(z[:2]), torch.logsumexp(t(z[:2]), dim=-1).numpy())


@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("value", [-3.5, 0.0, 700.0, -np.inf, np.inf, np.nan])
def test_zero_d_input_is_one_class(fn, value):
    """Cause: 0-d input raised ValueError; torch treats it as one element along dim 0 or -1."""
    x = np.float64(value)
    for axis in (0, -1):
        ours = getattr(ce, fn)(x, axis=axis)
        theirs = getattr(torch, fn)(t(x), dim=axis).numpy()
        assert np.shape(ours) == () and ours.dtype == np.float64
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(ValueError, match="axis=1"):
        getattr(ce, fn)(x, axis=1)


def _entry_points(z, target, **opts):
    value = ce.cross_entropy(z, target, **opts)
    grad = ce.cross_entropy_grad(z, target, **opts)
    both = ce.cross_entropy_value_and_grad(z, target, **opts)
    np.testing.assert_array_equal(both[0], value)
    np.testing.assert_array_equal(both[1], grad)
    return value, grad


@pytest.mark.parametrize(
    "target, opts",
    [
        (np.array([1, 0]), dict(weight=np.zeros(3))),  # zero total class weight
        (np.array([1, 2]), dict(weight=np.array([1.0, 0.0, 0.0]))),
        (np.array([-100, -100]), dict(weight=np.ones(3))),  # every target ignored (reference path)
        (np.array([-100, -100]), dict(label_smoothing=0.2)),
        (np.array([-100, -100]), {}),  # the fast path
    ],
)
def test_mean_over_zero_terms_is_nan_with_zero_gradient(target, opts):
    """Cause: the mean over zero terms gave a NaN gradient (0/0) in the reference path (API rule 1)."""
    z = np.array([[0.5, -1.0, 2.0], [1.0, 1.0, -np.inf]])
    value, grad = _entry_points(z, target, **opts)
    assert np.isnan(value)
    np.testing.assert_array_equal(grad, np.zeros_like(z))
    if (
        "weight" not in opts
        or opts["weight"][np.where(target >= 0, target, 0)].sum() != 0
        or (target < 0).all()
    ):
        tw = {k: (t(v) if isinstance(v, np.ndarray) else v) for k, v in opts.items()}
        assert torch_value_and_grad(F.cross_entropy, z, t(target), **tw)[1].tolist() == grad.tolist()


@pytest.mark.parametrize("fn", ["mse_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits"])
def test_empty_input_mean_is_nan_with_zero_gradient(fn):
    """Cause: reduction_scale returned NaN for zero elements, so a mean's gradient was NaN-scaled."""
    a = np.zeros((0, 3))
    assert np.isnan(getattr(ce, fn)(a, a))
    grad = getattr(ce, fn + "_grad")(a, a)
    assert grad.shape == (0, 3)
    from ce_lib._validation import reduction_scale

    assert reduction_scale("mean", 0) == 0.0 and reduction_scale("mean", 4) == 0.25


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_gradient_is_exact_when_p_y_rounds_to_one(dtype):
    """Cause (a known limitation): with weight= or a float target the reference gradient formed
    (sum q) p_y - q_y from the rounded p_y = 1 and returned exactly 0 at the true class."""
    mpmath.mp.dps = 50
    gap = 41.0 if dtype == np.float64 else 20.0
    z = np.array([[0.0, 1.0, gap]], dtype=dtype)
    exact = float(mpmath.exp(gap) / (1 + mpmath.e + mpmath.exp(gap)) - 1)  # p_y - 1
    exact_others = [float(mpmath.exp(v) / (1 + mpmath.e + mpmath.exp(gap))) for v in (0.0, 1.0)]
    cases = [
        (np.array([2]), dict(weight=np.array([1.0, 1.0, 2.0], dtype=dtype)), 2.0),
        (np.array([2]), dict(weight=np.ones(3, dtype=dtype)), 1.0),
        (np.array([[0.0, 0.0, 1.0]], dtype=dtype), {}, 1.0),  # a one-hot float target
        (np.array([2]), {}, 1.0),  # the fast path, for comparison
    ]
    for target, opts, w_y in cases:
        grad = _entry_points(z, target, reduction="sum", **opts)[1][0].astype(np.float64)
        tol = 4 * np.finfo(dtype).eps
        assert abs(grad[2] - w_y * exact) <= tol * abs(w_y * exact), (opts, grad[2], w_y * exact)
        np.testing.assert_allclose(grad[:2], w_y * np.array(exact_others), rtol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nonfinite_rows_in_the_reference_path_follow_torch(dtype):
    """Cause: in the reference path a zero coefficient hid a +inf/NaN row (finite value where torch
    gives NaN), and an ignored row with such logits got a NaN gradient (the fast path: 0)."""
    z = np.array([[np.inf, 0.0, 1.0], [np.nan, 0.0, 1.0], [0.0, 1.0, 2.0], [np.inf, 0.0, 1.0]], dtype=dtype)
    y = np.array([1, 0, 2, -100])
    w = np.array([1.0, 0.0, 2.0], dtype=dtype)
    for opts in (dict(weight=w), dict(label_smoothing=0.1), {}):
        value, grad = _entry_points(z, y, reduction="none", **opts)
        assert np.isnan(value[:2]).all() and value[3] == 0 and np.isfinite(value[2])
        assert np.isnan(grad[:2]).all() and np.isfinite(grad[2]).all()
        np.testing.assert_array_equal(grad[3], 0)  # "ce_ignored_row_without_softmax"
    probs = np.array([[0.0, 1.0, 0.0]] * 4, dtype=dtype)
    value, grad = _entry_points(z, probs, reduction="none", weight=np.array([0.0, 0.0, 1.0], dtype=dtype))
    assert np.isnan(value[[0, 1, 3]]).all() and np.isnan(grad[[0, 1, 3]]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_coefficient_at_minus_inf_is_absent(dtype):
    """Documented difference "ce_zero_coefficient_at_minus_inf": 0 log 0 = 0, no NaN."""
    z = np.array([[-np.inf, 0.0, 1.0]], dtype=dtype)
    value, grad = _entry_points(z, np.array([[0.0, 0.25, 0.75]], dtype=dtype), reduction="sum")
    expected = -(0.25 * ce.log_softmax(z)[0, 1] + 0.75 * ce.log_softmax(z)[0, 2])
    np.testing.assert_allclose(value, expected, rtol=4 * np.finfo(dtype).eps)
    assert grad[0, 0] == 0 and np.isfinite(grad).all()
    assert np.isnan(
        F.cross_entropy(t(z), t(np.array([[0.0, 0.25, 0.75]], dtype=dtype)), reduction="sum").item()
    )


def test_bce_with_logits_limits_at_infinite_logits():
    """Cause: 0 * inf made NaN (and a RuntimeWarning) where the loss has a limit; torch: NaN too
    (documented difference "bce_logits_limits_at_inf")."""
    z = np.array([np.inf, np.inf, np.inf, -np.inf, -np.inf, -np.inf, np.inf])
    y = np.array([0.0, 1.0, 0.5, 0.0, 1.0, 0.5, 0.0])
    w = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    loss = ce.binary_cross_entropy_with_logits(z, y, weight=w, reduction="none")
    np.testing.assert_array_equal(loss, [np.inf, 0.0, np.inf, 0.0, np.inf, np.inf, 0.0])
    grad = ce.binary_cross_entropy_with_logits_grad(z, y, weight=w, reduction="none")
    theirs_grad = torch_value_and_grad(
        F.binary_cross_entropy_with_logits, z, t(y), weight=t(w), reduction="none"
    )[1]
    np.testing.assert_array_equal(grad, theirs_grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_reference_path_is_shift_invariant(dtype):
    """Policy 5: the reference path subtracts the row maximum first, exactly (grid logits)."""
    rng = np.random.default_rng(5)
    z = (rng.integers(-80, 80, size=(6, 5)) / GRID).astype(dtype)
    y = rng.integers(0, 5, size=6)
    w = np.array([1.0, 0.5, 2.0, 1.0, 3.0], dtype=dtype)
    base = _entry_points(z, y, weight=w, label_smoothing=0.1)
    for c in [1e4, -1e4] if dtype == np.float32 else [1e15, -1e15, 700.0]:
        shifted = _entry_points(z + dtype(c), y, weight=w, label_smoothing=0.1)
        np.testing.assert_allclose(shifted[0], base[0], rtol=ULPS * np.finfo(dtype).eps)
        np.testing.assert_allclose(shifted[1], base[1], rtol=ULPS * np.finfo(dtype).eps, atol=0)


def test_documented_input_differences():
    """ "ce_negative_label_smoothing" and "mse_no_broadcast": ce_lib raises where torch accepts."""
    z, y = np.zeros((2, 3)), np.array([0, 1])
    F.cross_entropy(t(z), t(y), label_smoothing=-0.5)  # torch accepts a negative smoothing
    with pytest.raises(ValueError, match="label_smoothing"):
        ce.cross_entropy(z, y, label_smoothing=-0.5)
    with pytest.warns(UserWarning):
        F.mse_loss(t(np.zeros((2, 3))), t(np.zeros((1, 3))))  # torch broadcasts, with a warning
    with pytest.raises(ValueError, match="same shape"):
        ce.mse_loss(np.zeros((2, 3)), np.zeros((1, 3)))


# ---------------------------------------------------------------- the hypothesis tests

CHECKS = {
    "softmax_family": (check_softmax_family, [logits_and_axis()]),
    "softmax_family_zero_d": (
        check_softmax_family_zero_d,
        [st.sampled_from(DTYPES), st.sampled_from([0, -1]), st.integers(-800, 800)],
    ),
    "elementwise_functions": (check_elementwise_functions, [elementwise_input()]),
    "binary_cross_entropy_with_logits": (check_binary_cross_entropy_with_logits, [bce_logits_case()]),
    "binary_cross_entropy": (check_binary_cross_entropy, [bce_probs_case()]),
    "mse_loss": (
        check_mse_loss,
        [elementwise_input(), st.sampled_from(REDUCTIONS), st.integers(0, 2**32 - 1)],
    ),
    "cross_entropy": (check_cross_entropy, [cross_entropy_case()]),
    "cross_entropy_bad_inputs_rejected_by_both": (
        check_cross_entropy_bad_inputs_rejected_by_both,
        [bad_cross_entropy_case()],
    ),
    "binary_cross_entropy_bad_probs_rejected_by_both": (
        check_binary_cross_entropy_bad_probs_rejected_by_both,
        [st.sampled_from(DTYPES), st.sampled_from([-0.5, 1.5, np.nan]), st.integers(1, 4)],
    ),
}


@examples(900)
@given(logits_and_axis())
def test_softmax_family(case):
    check_softmax_family(case)


@examples(100)
@given(st.sampled_from(DTYPES), st.sampled_from([0, -1]), st.integers(-800, 800))
def test_softmax_family_zero_d(dtype, axis, value):
    check_softmax_family_zero_d(dtype, axis, value)


@examples(300)
@given(elementwise_input())
def test_elementwise_functions(case):
    check_elementwise_functions(case)


@examples(300)
@given(bce_logits_case())
def test_binary_cross_entropy_with_logits(case):
    check_binary_cross_entropy_with_logits(case)


@examples(400)
@given(bce_probs_case())
def test_binary_cross_entropy(case):
    check_binary_cross_entropy(case)


@examples(400)
@given(elementwise_input(), st.sampled_from(REDUCTIONS), st.integers(0, 2**32 - 1))
def test_mse_loss(case, reduction, seed):
    check_mse_loss(case, reduction, seed)


@examples(1000)
@given(cross_entropy_case())
def test_cross_entropy(case):
    check_cross_entropy(case)


@examples(300)
@given(bad_cross_entropy_case())
def test_cross_entropy_bad_inputs_rejected_by_both(case):
    check_cross_entropy_bad_inputs_rejected_by_both(case)


@examples(30)
@given(st.sampled_from(DTYPES), st.sampled_from([-0.5, 1.5, np.nan]), st.integers(1, 4))
def test_binary_cross_entropy_bad_probs_rejected_by_both(dtype, bad, n):
    check_binary_cross_entropy_bad_probs_rejected_by_both(dtype, bad, n)
