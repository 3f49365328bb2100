"""Cross-entropy at scale: the fast value-and-gradient path, online log-sum-exp, linear cross-entropy.

The fast path of ``cross_entropy`` / ``cross_entropy_grad`` is checked against
the readable reference formulas it replaces for the common case; the chunked
linear cross-entropy against the materialised computation; memory bounds are
checked with tracemalloc (deterministic: NumPy reports its allocations).
Nothing here measures time.
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ce_lib as ce
from ce_lib.categorical import (
    _reference_cross_entropy,
    _reference_cross_entropy_grad,
    cross_entropy_value_and_grad,
)
from ce_lib.scale import (
    linear_cross_entropy,
    linear_cross_entropy_grad,
    linear_cross_entropy_reference,
    linear_cross_entropy_value_and_grad,
    lse_finalize,
    lse_merge,
    lse_pair,
    online_logsumexp,
)

TOL = {
    np.float16: dict(rtol=2e-3, atol=1e-3),
    np.float32: dict(rtol=2e-5, atol=1e-6),
    np.float64: dict(rtol=1e-12, atol=1e-15),
}


def reference(z, y, **kw):
    opts = dict(axis=-1, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0) | kw
    args = (
        z,
        y,
        opts["axis"],
        opts["weight"],
        opts["ignore_index"],
        opts["reduction"],
        opts["label_smoothing"],
    )
    return _reference_cross_entropy(*args), _reference_cross_entropy_grad(*args)


def check_against_reference(z, y, dtype=np.float64, **kw):
    value, grad = cross_entropy_value_and_grad(z, y, **kw)
    ref_value, ref_grad = reference(z, y, **kw)
    assert np.asarray(value).dtype == np.asarray(ref_value).dtype and grad.dtype == ref_grad.dtype
    assert grad.shape == ref_grad.shape and np.shape(value) == np.shape(ref_value)
    np.testing.assert_allclose(value, ref_value, **TOL[dtype])
    np.testing.assert_allclose(grad, ref_grad, **TOL[dtype])
    np.testing.assert_array_equal(ce.cross_entropy(z, y, **kw), value)
    np.testing.assert_array_equal(ce.cross_entropy_grad(z, y, **kw), grad)


# -- the fast path against the reference ------------------------------------------


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("scale", [0.1, 3.0, 30.0, 300.0])
def test_fast_path_equals_reference(dtype, reduction, scale):
    scale = min(scale, 3.0) if dtype == np.float16 else scale  # float16 overflows beyond 65504
    rng = np.random.default_rng(0)
    z = (rng.normal(scale=scale, size=(37, 11)) + rng.normal(scale=scale, size=(37, 1))).astype(dtype)
    y = rng.integers(0, 11, size=37)
    y[[2, 5]] = -100
    check_against_reference(z, y, dtype, reduction=reduction)


@pytest.mark.parametrize(
    "shape, axis", [((5,), 0), ((4, 6), 1), ((3, 5, 4, 2), 1), ((3, 4, 7), -1), ((2, 1), 1)]
)
def test_fast_path_layouts(shape, axis):
    rng = np.random.default_rng(1)
    z = rng.normal(scale=4, size=shape)
    batch = shape[: axis % len(shape)] + shape[axis % len(shape) + 1 :]
    y = rng.integers(0, shape[axis], size=batch)
    for reduction in ("mean", "sum", "none"):
        check_against_reference(z, y, axis=axis, reduction=reduction)


def test_fast_path_extreme_logits():
    # shifted rows (exp would overflow), rows entirely below 0 (s < 1), masked -inf logits,
    # a confidently right row (loss ~ 4e-18: no cancellation), a confidently wrong one (loss ~ 1000)
    z = np.array(
        [
            [800.0, 790.0, 700.0],
            [-500.0, -480.0, -520.0],
            [0.0, -np.inf, 1.0],
            [40.0, 0.0, 0.0],
            [-1000.0, 0.0, -np.inf],
            [1e-3, 2e-3, 3e-3],
        ]
    )
    y = np.array([1, 0, 0, 0, 0, 2])
    check_against_reference(z, y, reduction="none")
    check_against_reference(z, y)
    loss = ce.cross_entropy(z, y, reduction="none")
    assert loss[3] == pytest.approx(2 * np.exp(-40.0), rel=1e-12)  # log(1 + 2 e^-40)
    assert loss[4] == pytest.approx(1000.0, rel=1e-15)
    g = ce.cross_entropy_grad(z, y, reduction="sum")
    assert g[3, 0] == pytest.approx(-2 * np.exp(-40.0), rel=1e-12)  # p_y - 1 without cancellation


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_fast_path_non_finite_logits(bad):
    # Policy: a NaN or +inf logit makes its row NaN (as torch); a -inf logit is a class of
    # probability 0; an ignored row (here all -inf) contributes 0 and a zero gradient.
    z = np.array([[1.0, 2.0, 3.0], [0.0, 1.0, bad], [-np.inf, -np.inf, -np.inf]])
    y = np.array([0, 1, -100])
    value, grad = cross_entropy_value_and_grad(z, y, reduction="none")
    ref_value, ref_grad = reference(z[:1], y[:1], reduction="none")
    np.testing.assert_allclose(value[0], ref_value[0], rtol=1e-15)
    np.testing.assert_allclose(grad[0], ref_grad[0], rtol=1e-15)
    assert value[2] == 0 and not grad[2].any()
    if bad == -np.inf:
        ref_value, ref_grad = reference(z[1:2, :2], y[1:2], reduction="none")
        np.testing.assert_allclose(value[1], ref_value[0], rtol=1e-15)
        np.testing.assert_allclose(grad[1], [*ref_grad[0], 0.0], rtol=1e-15)
    else:
        assert np.isnan(value[1]) and np.isnan(grad[1]).all()


def test_all_ignored_and_other_options_use_the_reference():
    z = np.random.default_rng(2).normal(size=(4, 3))
    y = np.full(4, -100)
    v, g = cross_entropy_value_and_grad(z, y)
    assert np.isnan(v) and not g.any()  # a mean over zero terms: 0/0 = NaN, gradient 0
    y = np.array([0, 1, 2, 1])
    for kw in (dict(weight=[1.0, 2.0, 0.5]), dict(label_smoothing=0.1)):
        check_against_reference(z, y, **kw)
    p = ce.softmax(np.random.default_rng(3).normal(size=(4, 3)))
    check_against_reference(z, p)
    with pytest.raises(ValueError, match="outside"):
        cross_entropy_value_and_grad(z, np.array([0, 1, 3, 1]))
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy_value_and_grad(z, y, reduction="avg")


@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 40),
    st.integers(1, 300),
    st.sampled_from([0.5, 5.0, 50.0, 500.0]),
)
def test_fast_path_property(seed, n, c, scale):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=scale, size=(n, c)) + rng.normal(scale=scale, size=(n, 1))
    y = rng.integers(0, c, size=n)
    check_against_reference(z, y, reduction="none")
    check_against_reference(z, y)


def test_fast_path_memory():
    """Extra memory beyond the returned gradient: a few rows and per-row vectors, not copies of the logits."""
    z = np.random.default_rng(4).normal(size=(2048, 1000)).astype(np.float32)
    y = np.random.default_rng(5).integers(0, 1000, size=2048)
    extra = traced_peak(lambda: cross_entropy_value_and_grad(z, y)) - z.nbytes
    assert extra < 0.15 * z.nbytes, extra / z.nbytes


# -- online log-sum-exp ------------------------------------------------------------


@given(st.integers(0, 2**32 - 1), st.integers(1, 200), st.integers(1, 30), st.sampled_from([1.0, 30.0, 1e3]))
def test_online_logsumexp_any_chunking(seed, c, k, scale):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=scale, size=(3, c))
    cuts = np.sort(rng.integers(0, c + 1, size=k))  # uneven chunks, some of them empty
    chunks = np.split(x, cuts, axis=-1)
    np.testing.assert_allclose(online_logsumexp(chunks), ce.logsumexp(x, axis=-1), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(
        online_logsumexp(np.split(x.T, cuts, axis=0), axis=0),
        ce.logsumexp(x, axis=-1),
        rtol=1e-13,
        atol=1e-13,
    )


@given(st.integers(0, 2**32 - 1), st.integers(2, 25))
def test_merge_in_any_order_and_grouping(seed, k):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=20, size=(4, 10 * k))
    pairs = [lse_pair(c) for c in np.array_split(x, k, axis=-1)]
    order = rng.permutation(k)
    pairs = [pairs[i] for i in order]  # commutative: any order
    while len(pairs) > 1:  # associative: merge random neighbours, like an arbitrary reduction tree
        i = int(rng.integers(0, len(pairs) - 1))
        pairs[i : i + 2] = [lse_merge(pairs[i], pairs[i + 1])]
    np.testing.assert_allclose(lse_finalize(pairs[0]), ce.logsumexp(x), rtol=1e-13, atol=1e-13)


def test_online_logsumexp_edge_cases():
    ninf = -np.inf
    assert online_logsumexp([np.array([ninf, ninf]), np.array([])]) == ninf
    assert online_logsumexp([np.array([ninf]), np.array([0.0, 0.0])]) == pytest.approx(np.log(2))
    assert online_logsumexp([np.array([1.0]), np.array([np.inf])]) == np.inf
    assert np.isnan(online_logsumexp([np.array([1.0]), np.array([np.nan])]))
    big = np.array([1e308, 1e308])
    assert online_logsumexp([big[:1], big[1:]]) == pytest.approx(1e308 + np.log(2))
    m, d = lse_pair(np.array([3.0, -1.0]))
    assert m == 3.0 and d == pytest.approx(1 + np.exp(-4.0))
    assert lse_merge((ninf, 0.0), (m, d)) == (m, d)  # the neutral pair
    with pytest.raises(ValueError, match="at least one chunk"):
        online_logsumexp([])
    x = np.random.default_rng(6).normal(size=(2, 3, 50)).astype(np.float32)
    out = online_logsumexp(np.array_split(x, 4, axis=-1))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ce.logsumexp(x), rtol=1e-6)


# -- linear cross-entropy -------------------------------------------------------------


def linear_problem(n=53, d=9, v=71, dtype=np.float64, seed=7):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, d)).astype(dtype)
    W = (rng.normal(size=(v, d)) / np.sqrt(d) * 3).astype(dtype)
    b = rng.normal(size=v).astype(dtype)
    y = rng.integers(0, v, size=n)
    y[[1, n // 2]] = -100
    return h, W, b, y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk_size", [1, 7, 53, 1000, None])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_equals_materialised(dtype, reduction, chunk_size, with_bias):
    h, W, b, y = linear_problem(dtype=dtype)
    b = b if with_bias else None
    loss, (dh, dW, db) = linear_cross_entropy_value_and_grad(
        h, W, y, bias=b, reduction=reduction, chunk_size=chunk_size
    )
    ref_loss, (rdh, rdW, rdb) = linear_cross_entropy_reference(h, W, y, bias=b, reduction=reduction)
    tol = TOL[dtype]
    np.testing.assert_allclose(loss, ref_loss, **tol)
    np.testing.assert_allclose(dh, rdh, **tol)
    np.testing.assert_allclose(dW, rdW, **tol)
    assert (db is None) == (b is None)
    if b is not None:
        np.testing.assert_allclose(db, rdb, **tol)
    assert dh.dtype == dW.dtype == np.dtype(dtype) and np.asarray(loss).dtype == np.dtype(dtype)
    # the value-only and gradient-only entry points agree with the combined one
    np.testing.assert_array_equal(
        linear_cross_entropy(h, W, y, bias=b, reduction=reduction, chunk_size=chunk_size), loss
    )
    g = linear_cross_entropy_grad(h, W, y, bias=b, reduction=reduction, chunk_size=chunk_size)
    np.testing.assert_array_equal(g[0], dh)
    # and the materialised logits give the same loss through cross_entropy itself
    logits = h @ W.T + (0 if b is None else b)
    np.testing.assert_allclose(ce.cross_entropy(logits, y, reduction=reduction), loss, **tol)


def test_linear_gradients_are_gradients():
    h, W, b, y = linear_problem(n=6, d=3, v=5)
    dh, dW, db = linear_cross_entropy_grad(h, W, y, bias=b, chunk_size=4)
    for x, analytic, f in (
        (h, dh, lambda x: linear_cross_entropy(x, W, y, bias=b)),
        (W, dW, lambda x: linear_cross_entropy(h, x, y, bias=b)),
        (b, db, lambda x: linear_cross_entropy(h, W, y, bias=x)),
    ):
        result = ce.gradcheck(f, x, analytic)
        assert result.passed, str(result)


def test_linear_extreme_and_non_finite_logits():
    h, W, b, y = linear_problem(n=12, d=4, v=9)
    h = h * 200  # logits in the thousands: exp(z) without the max-shift would overflow
    for reduction in ("none", "mean"):
        got = linear_cross_entropy_value_and_grad(h, W, y, bias=b, chunk_size=5, reduction=reduction)
        ref = linear_cross_entropy_reference(h, W, y, bias=b, reduction=reduction)
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-12)
        for a, r in zip(got[1], ref[1], strict=True):
            np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-15)
    h[3, 0] = np.nan
    with np.errstate(all="ignore"):
        loss = linear_cross_entropy(h, W, y, bias=b, chunk_size=5, reduction="none")
        ref = linear_cross_entropy_reference(h, W, y, bias=b, reduction="none")[0]
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(ref))
    np.testing.assert_allclose(loss[~np.isnan(loss)], ref[~np.isnan(ref)], rtol=1e-12)


def test_linear_bad_arguments():
    h, W, b, y = linear_problem(n=4, d=3, v=5)
    with pytest.raises(ValueError, match="same d"):
        linear_cross_entropy(h, W[:, :2], y)
    with pytest.raises(ValueError, match="bias"):
        linear_cross_entropy(h, W, y, bias=b[:3])
    with pytest.raises(ValueError, match="chunk_size"):
        linear_cross_entropy(h, W, y, chunk_size=0)
    with pytest.raises(ValueError, match="outside"):
        linear_cross_entropy(h, W, np.array([0, 1, 2, 5]))
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(h, W, y, reduction="avg")


def traced_peak(f) -> int:
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    out = f()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del out
    return peak


# A ufunc may buffer each of its operands, np.getbufsize() elements each. NumPy 2.0 allocates such a
# buffer (32 KiB here) for the broadcast row scaling in _ce_rows even though it casts nothing; NumPy
# 2.4 does not. Three float64 operands of a binary ufunc are an upper bound; the bound stays N-free.
UFUNC_BUFFERS = 3 * np.getbufsize() * 8


def test_linear_memory_is_independent_of_n_and_never_holds_the_logits():
    """Peak extra memory of the chunked version: one chunk of logits and a small scratch, whatever N or V."""
    d, chunk = 64, 32
    extras = {}
    for n, v in ((512, 8192), (4096, 8192), (512, 16384)):
        h, W, _, y = linear_problem(n=n, d=d, v=v, dtype=np.float32, seed=8)
        outputs = h.nbytes + W.nbytes  # dh and dW
        peak = traced_peak(
            lambda h=h, W=W, y=y: linear_cross_entropy_value_and_grad(h, W, y, chunk_size=chunk)
        )
        extras[n, v] = peak - outputs
        bound = (  # chunk of logits + dW slice + per-token vectors + small scratch + ufunc buffers
            chunk * v * 4 + (4 << 20) + 64 * n + (1 << 16) + UFUNC_BUFFERS
        )
        assert extras[n, v] <= bound, (n, v, extras[n, v], bound)
        if (n, v) == (4096, 8192):
            materialised = (
                traced_peak(lambda h=h, W=W, y=y: linear_cross_entropy_reference(h, W, y)) - outputs
            )
            assert materialised >= 1.9 * n * v * 4  # the logits and their gradient, at once
            assert extras[n, v] < materialised / 20
    # 8x the tokens: the extra memory grows only by the per-token vectors (a few bytes per token)
    assert extras[4096, 8192] - extras[512, 8192] <= 64 * (4096 - 512)
