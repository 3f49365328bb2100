"""The one-pass cross-entropy path (ce_lib._fastpath) and its users: exact, for every row, in one pass.

Each test here reproduces a finding of issue 13 that failed on the previous fast path:

* near the overflow edge the previous path exponentiated without a shift and multiplied
  the gradient by ``scale / s`` with ``s`` close to the largest float, a subnormal factor
  that dropped bits (checked against mpmath in float64 and float32);
* rows with ``log Z < 0`` (a z-loss, small or shifted logits) or with ``Z = inf`` were redone
  in a second pass, silently (the number of passes is observed by wrapping ``_ce_rows``);
* NaN or ``+inf`` logits, every target ignored, or an empty batch sent the whole call to
  the reference formulas instead of giving the answer of the API rules directly.

The truth is mpmath at 50 digits. Logits are drawn on a binary grid so that every
difference ``z_c - z_k`` and every offset ``z + c`` is exact: then the only rounding is
the path's own, and adding a constant to a row must not change the result.

"API rule N" is rule N of the edge cases listed at the top of book/api.md.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ce_lib._fastpath as fp
import ce_lib.scale as sc
from ce_lib._fastpath import fast_cross_entropy
from ce_lib.parallel import vocab_parallel_cross_entropy
from ce_lib.scale import linear_cross_entropy_reference, linear_cross_entropy_value_and_grad

EPS = {np.float32: float(np.finfo(np.float32).eps), np.float64: float(np.finfo(np.float64).eps)}
TINY = {np.float32: float(np.finfo(np.float32).tiny), np.float64: float(np.finfo(np.float64).tiny)}


def fast(z, y, reduction="sum", ignore_index=-100):
    """(value, grad) from the fast path itself; it must take every integer-target case."""
    out = fast_cross_entropy(z, y, -1, None, ignore_index, reduction, 0.0, True)
    assert out is not None, "the fast path handed the call to the reference"
    return out


def exact_rows(z, y):
    """mpmath (50 digits): per-row loss LSE(z) - z_y and gradient p - e_y, as float64."""
    mpmath.mp.dps = 50
    z = np.asarray(z, dtype=np.float64)
    loss, grad = np.empty(len(z)), np.empty(z.shape)
    for n, (row, t) in enumerate(zip(z, y, strict=True)):
        if np.isneginf(row).all():  # no distribution
            loss[n], grad[n] = np.nan, np.nan
            continue
        ref = mpmath.mpf(row[t] if row[t] > -np.inf else row.max())  # exp(z_c - z_y): exact 1 at y
        e = [mpmath.exp(mpmath.mpf(v) - ref) if v > -np.inf else mpmath.mpf(0) for v in row]
        rest = mpmath.fsum(e[:t] + e[t + 1 :])  # no cancellation in 1 + rest, nor in p_y - 1
        s = e[t] + rest
        loss[n] = float(mpmath.log1p(rest)) if row[t] > -np.inf else np.inf
        grad[n] = [float(ec / s) for ec in e]
        grad[n, t] = float(-rest / s)
    return loss, grad


def assert_close_to_exact(got, exact, dtype, ulps):
    """Elementwise relative error at most ``ulps`` units of the format (below its normal range: absolute)."""
    got, exact = np.asarray(got, dtype=np.float64), np.asarray(exact, dtype=np.float64)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(exact))
    f = np.isfinite(exact)
    err = np.abs(got[f] - exact[f])
    bound = ulps * EPS[dtype] * np.abs(exact[f]) + TINY[dtype]
    worst = np.max(err / bound, initial=0.0)
    assert worst <= 1.0, f"error {worst:.1f} x the bound of {ulps} ulps"


def count_passes(monkeypatch, module):
    """Wrap ``module._ce_rows`` and return the list its calls are recorded in (rows per call)."""
    calls = []
    inner = module._ce_rows

    def counted(z, *args, **kwargs):
        calls.append(z.shape[0])
        return inner(z, *args, **kwargs)

    monkeypatch.setattr(module, "_ce_rows", counted)
    return calls


def grid_logits(rng, shape, dtype, step, spread):
    """Logits on the grid ``step * k``, |k| <= spread / step: differences of two logits are exact."""
    k = rng.integers(-int(spread / step), int(spread / step) + 1, size=shape)
    return (k * step).astype(dtype)


# -- the overflow edge ---------------------------------------------------------


@pytest.mark.parametrize("dtype, edge", [(np.float64, 706.0), (np.float32, 86.0)])
def test_overflow_edge_matches_mpmath(dtype, edge):
    # The rows' sum of exponentials is close to the largest float (log Z about 2 below log(max)):
    # the previous path scaled the gradient by (1/64) / s, a subnormal factor (finding 1).
    rng = np.random.default_rng(0)
    z = (edge - grid_logits(rng, (64, 12), np.float64, 1 / 64, 4.0) ** 2 / 4).astype(dtype)
    y = rng.integers(0, 12, size=64)
    loss, grad = fast(z, y, reduction="none")
    exact_loss, exact_grad = exact_rows(z, y)
    assert_close_to_exact(loss, exact_loss, dtype, ulps=8)
    value, grad = fast(z, y, reduction="mean")
    assert_close_to_exact(grad, exact_grad / 64, dtype, ulps=8)
    assert_close_to_exact(value, exact_loss.mean(), dtype, ulps=8)


# -- one pass for every row -----------------------------------------------------


def zloss_like(rng, n, c, dtype):
    """Rows whose log-sum-exp is close to 0, half of them below: what a z-loss trains towards."""
    z = grid_logits(rng, (n, c), np.float64, 1 / 256, 6.0)
    lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
    return (z - np.round(lse * 256) / 256 + rng.choice([-1, 1], size=(n, 1)) / 64).astype(dtype)


def around(rng, dtype, centre):
    return grid_logits(rng, (40, 50), dtype, 1 / 64, 4.0) + dtype(centre)


ONE_PASS_CASES = {
    "z-loss: log Z close to 0, half the rows below": lambda rng, dt: zloss_like(rng, 40, 50, dt),
    "small logits (z * 0.01)": lambda rng, dt: grid_logits(rng, (40, 50), dt, 1 / 1024, 0.06),
    "every logit around -50": lambda rng, dt: around(rng, dt, -50.0),
    "every logit around +120 (exp overflows in float32)": lambda rng, dt: around(rng, dt, 120.0),
    "huge losses (z_y - max about -1000)": lambda rng, dt: np.where(
        np.arange(50) == 0, -1000.0, grid_logits(rng, (40, 50), np.float64, 1 / 64, 4.0)
    ).astype(dt),
}


@pytest.mark.parametrize("case", ONE_PASS_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_row_takes_one_pass(monkeypatch, case, dtype):
    # Finding 2: rows with log Z < 0 or Z = inf were redone in a second, silent pass.
    rng = np.random.default_rng(1)
    z = ONE_PASS_CASES[case](rng, dtype)
    y = np.where(np.arange(40) % 2 == 0, 0, rng.integers(0, 50, size=40))
    calls = count_passes(monkeypatch, fp)
    loss, grad = fast(z, y, reduction="none")
    assert calls == [40], f"passes over the rows: {calls}"
    exact_loss, exact_grad = exact_rows(z, y)
    assert_close_to_exact(loss, exact_loss, dtype, ulps=16)
    assert_close_to_exact(grad, exact_grad, dtype, ulps=16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_cross_entropy_takes_one_pass_per_chunk(monkeypatch, dtype):
    # Finding 2 in scale.py: the previous code recomputed failing rows' logits with a second matmul.
    rng = np.random.default_rng(2)
    h = (rng.integers(-8, 9, size=(24, 4)) / 8).astype(dtype)
    W = (rng.integers(-8, 9, size=(30, 4)) / 8).astype(dtype)
    y = rng.integers(0, 30, size=24)
    for bias in (np.full(30, -20.0), np.full(30, 100.0), np.full(30, -np.log(30))):  # log Z < 0, > 88, ~ 0
        b = bias.astype(dtype)
        calls = count_passes(monkeypatch, sc)
        loss, (dh, dW, db) = linear_cross_entropy_value_and_grad(h, W, y, bias=b, chunk_size=10)
        assert calls == [10, 10, 4]
        ref_loss, (ref_dh, ref_dW, ref_db) = linear_cross_entropy_reference(h, W, y, bias=b)
        tol = dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(loss, ref_loss, **tol)
        for a, r in ((dh, ref_dh), (dW, ref_dW), (db, ref_db)):
            np.testing.assert_allclose(a, r, **tol)


# -- non-finite logits, zero terms, empty batches -------------------------------


def test_non_finite_logits_follow_the_api_rules_row_by_row():
    # Finding 3: any NaN or +inf sent the whole call to the reference. Policy: a NaN or +inf
    # logit makes its row NaN (as torch); a row of -inf only: NaN; a masked class has p = 0; a
    # target at -inf has loss +inf and the finite gradient p - e_y; the other rows are unaffected.
    finite = np.array([[0.5, 1.0, 2.0], [3.0, -1.0, 0.0]])
    bad = np.array([[0.0, np.nan, 1.0], [0.0, np.inf, 1.0], [-np.inf, -np.inf, -np.inf]])
    masked = np.array([[-np.inf, 1.0, 2.0], [-np.inf, 1.0, 2.0]])
    z = np.vstack([finite, bad, masked])
    y = np.array([2, 0, 0, 1, 2, 1, 0])
    with np.errstate(all="raise"):  # no floating-point warning escapes either
        loss, grad = fast(z, y, reduction="none")
    exact_loss, exact_grad = exact_rows(np.vstack([finite, masked]), y[[0, 1, 5, 6]])
    assert_close_to_exact(loss[[0, 1, 5, 6]], exact_loss, np.float64, ulps=8)
    assert_close_to_exact(grad[[0, 1, 5, 6]], exact_grad, np.float64, ulps=8)
    assert np.isnan(loss[2:5]).all() and np.isnan(grad[2:5]).all()
    assert grad[5, 0] == 0 and loss[6] == np.inf and grad[6, 0] == -1.0  # p_y = 0 exactly
    value, grad_mean = fast(z, y, reduction="mean")
    assert np.isnan(value) and np.isnan(grad_mean[2:5]).all()
    np.testing.assert_allclose(grad_mean[[0, 1, 5, 6]], grad[[0, 1, 5, 6]] / 7, rtol=4 * EPS[np.float64])
    y_ignored = np.where(np.isin(np.arange(7), [2, 3, 4]), -100, y)  # ignored bad rows: 0, as torch
    value, grad_ignored = fast(z, y_ignored, reduction="sum")
    assert value == np.sum(loss[[0, 1, 5, 6]]) and not grad_ignored[2:5].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mean_over_zero_terms_and_empty_batches(dtype):
    # Finding 4 / API rule 1: value NaN for "mean" (0/0), 0 for "sum", zero or empty gradient;
    # the previous fast path handed these to the reference.
    z = np.arange(12, dtype=dtype).reshape(4, 3)
    for y in (np.full(4, -100), np.full(4, 7)):
        value, grad = fast(z, y, reduction="mean", ignore_index=int(y[0]))
        assert np.isnan(value) and value.dtype == dtype
        assert grad.dtype == dtype and not grad.any()
        value, grad = fast(z, y, reduction="sum", ignore_index=int(y[0]))
        assert value == 0 and not grad.any()
    for reduction, expected in (("mean", np.nan), ("sum", 0.0)):
        value, grad = fast(np.zeros((0, 5), dtype=dtype), np.zeros(0, dtype=int), reduction=reduction)
        np.testing.assert_array_equal(value, expected)
        assert grad.shape == (0, 5) and grad.dtype == dtype
    value, grad = fast(np.zeros((2, 0, 5), dtype=dtype), np.zeros((2, 0), dtype=int), reduction="none")
    assert value.shape == (2, 0) and grad.shape == (2, 0, 5)


def test_linear_and_parallel_mean_over_zero_terms():
    # Policy 1 in scale.py and parallel.py: the previous vocab-parallel gradients were NaN.
    rng = np.random.default_rng(3)
    h, W = rng.normal(size=(5, 3)), rng.normal(size=(7, 3))
    y = np.full(5, -100)
    loss, (dh, dW, db) = linear_cross_entropy_value_and_grad(h, W, y, bias=np.zeros(7), chunk_size=2)
    assert np.isnan(loss) and not dh.any() and not dW.any() and not db.any()
    z = h @ W.T
    result = vocab_parallel_cross_entropy([z[:, :3], z[:, 3:]], y, reduction="mean")
    assert np.isnan(result.loss) and not any(g.any() for g in result.grad_shards)


def test_parallel_non_finite_logits_follow_the_api_rules():
    # Policies 2-4 in parallel.py: the previous version raised ValueError for NaN, +inf, all -inf.
    z = np.array([[0.5, 1.0, 2.0, 0.0], [0.0, np.nan, 1.0, 1.0], [0.0, 1.0, np.inf, 1.0], [-np.inf] * 4])
    z = np.vstack([z, [[-np.inf, 1.0, 2.0, 0.5]]])
    y = np.array([3, 0, 0, 1, 0])
    with np.errstate(all="raise"):
        loss, grads, _ = vocab_parallel_cross_entropy([z[:, :1], z[:, 1:3], z[:, 3:]], y)
    grad = np.concatenate(grads, axis=1)
    ref_loss, ref_grad = fast(z, y, reduction="none")
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-15)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-15)
    assert np.isnan(loss[1:4]).all() and loss[4] == np.inf and grad[4, 0] == -1.0


# -- accuracy and shift invariance, drawn ----------------------------------------

OFFSETS = {
    np.float32: [0.0, 1e4, -1e4, 88.0, -88.0, 200.0],
    np.float64: [0.0, 1e15, -1e15, 709.0, -745.0, 1e4],
}
STEP = {np.float32: 2.0**-6, np.float64: 2.0**-2}  # z + 1e4 (float32), z + 1e15 (float64) stay exact


@settings(max_examples=500, deadline=None, derandomize=True)
@given(
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 5),
    c=st.integers(1, 9),
    spread=st.sampled_from([0.25, 4.0, 40.0, 120.0]),
    mask=st.floats(0.0, 0.5),
    offset_index=st.integers(0, 5),
)
def test_matches_mpmath_and_is_shift_invariant(dtype, seed, n, c, spread, mask, offset_index):
    rng = np.random.default_rng(seed)
    z = grid_logits(rng, (n, c), dtype, STEP[dtype], spread)
    z[rng.random((n, c)) < mask] = -np.inf  # masked classes, sometimes the target, sometimes a whole row
    y = rng.integers(0, c, size=n)
    shifted = z + dtype(OFFSETS[dtype][offset_index])
    finite = np.isfinite(z)
    assert (shifted[finite] - z[finite] == OFFSETS[dtype][offset_index]).all()  # the offset is exact
    loss, grad = fast(z, y, reduction="none")
    loss_s, grad_s = fast(shifted, y, reduction="none")
    exact_loss, exact_grad = exact_rows(z, y)
    all_masked = np.isneginf(z).all(axis=1)  # no distribution: NaN (API rule 2)
    for lo, gr in ((loss, grad), (loss_s, grad_s)):
        assert_close_to_exact(lo, exact_loss, dtype, ulps=8)
        assert_close_to_exact(gr, exact_grad, dtype, ulps=8)
        assert np.array_equal(np.isnan(lo), all_masked)
