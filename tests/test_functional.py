"""Softmax, log-softmax, log-sum-exp, sigmoid and friends: values and numerics."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sp

import ce_lib as ce

FLOATS = [np.float32, np.float64]


def test_worked_example_from_the_course_notes():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(ce.softmax(x), [0.0320586, 0.0871443, 0.2368828, 0.6439143], atol=5e-8)
    np.testing.assert_allclose(ce.logsumexp(x), 4.4401897, atol=5e-8)
    np.testing.assert_allclose(ce.logsumexp(10 * x), 40.0000454, atol=5e-8)
    np.testing.assert_allclose(ce.logsumexp(x / 10), 1.6425355, atol=5e-8)


@pytest.mark.parametrize("axis", [0, 1, -1, 2])
def test_agrees_with_scipy_along_any_axis(axis):
    x = np.random.default_rng(1).normal(scale=5, size=(3, 4, 5))
    np.testing.assert_allclose(ce.softmax(x, axis=axis), sp.softmax(x, axis=axis), rtol=1e-13)
    # SciPy's log_softmax loses ~1e-12 relative accuracy on the largest class
    # (see the mpmath test below, which ce_lib passes at a few ulps).
    np.testing.assert_allclose(ce.log_softmax(x, axis=axis), sp.log_softmax(x, axis=axis), rtol=1e-11)
    np.testing.assert_allclose(ce.logsumexp(x, axis=axis), sp.logsumexp(x, axis=axis), rtol=1e-13)
    kept = ce.logsumexp(x, axis=axis, keepdims=True)
    np.testing.assert_allclose(kept, sp.logsumexp(x, axis=axis, keepdims=True), rtol=1e-13)
    assert kept.ndim == 3


def test_log_softmax_and_logsumexp_are_accurate_to_a_few_ulps():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    x = np.random.default_rng(5).normal(scale=4, size=(200, 6))
    exact_lse = np.array([float(mpmath.log(sum(mpmath.exp(mpmath.mpf(v)) for v in row))) for row in x])
    exact_lsm = np.array(
        [
            [float(mpmath.mpf(v) - mpmath.log(sum(mpmath.exp(mpmath.mpf(u)) for u in row))) for v in row]
            for row in x
        ]
    )
    np.testing.assert_allclose(ce.logsumexp(x), exact_lse, rtol=4e-16)
    np.testing.assert_allclose(ce.log_softmax(x), exact_lsm, rtol=8e-16)


def test_logsumexp_keeps_tiny_contributions():
    # log(1 + e^-40) = e^-40 to double precision; the naive m + log(sum) gives 0.
    assert ce.logsumexp(np.array([0.0, -40.0])) == pytest.approx(4.248354255291589e-18, rel=1e-12)
    assert ce.logsumexp(np.array([-40.0, 0.0, -50.0])) == pytest.approx(np.exp(-40) + np.exp(-50), rel=1e-12)


def test_logsumexp_infinities_and_nan():
    assert ce.logsumexp(np.array([-np.inf, -np.inf])) == -np.inf
    assert ce.logsumexp(np.array([-np.inf, 1.0])) == 1.0
    assert ce.logsumexp(np.array([np.inf, 1.0])) == np.inf
    assert np.isnan(ce.logsumexp(np.array([np.nan, 1.0])))
    rows = ce.logsumexp(np.array([[-np.inf, -np.inf], [0.0, 0.0]]))
    np.testing.assert_allclose(rows, [-np.inf, np.log(2)])


def test_logsumexp_of_an_empty_slice_is_minus_infinity():
    out = ce.logsumexp(np.zeros((3, 0)))
    assert out.shape == (3,) and np.all(out == -np.inf)


@pytest.mark.parametrize("dtype", FLOATS)
def test_huge_logits_do_not_overflow(dtype):
    x = (
        np.array([1e4, -1e4, 0.0], dtype=dtype)
        if dtype == np.float64
        else np.array([80.0, 100.0, 0.0], dtype)
    )
    s = ce.softmax(x)
    assert np.all(np.isfinite(s)) and s.dtype == dtype
    assert np.isfinite(ce.logsumexp(x))
    assert np.all(np.isfinite(ce.log_softmax(x)))


def test_softmax_of_masked_rows():
    x = np.array([[0.0, -np.inf, 0.0], [-np.inf, -np.inf, -np.inf]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no floating-point warning leaks out
        s = ce.softmax(x)
    np.testing.assert_array_equal(s[0], [0.5, 0.0, 0.5])
    assert np.all(np.isnan(s[1]))  # 0/0: no distribution over an empty support, as in PyTorch
    assert ce.log_softmax(x)[0, 1] == -np.inf


def test_log_softmax_is_finite_where_softmax_underflows():
    x = np.array([0.0, -1000.0])
    assert ce.softmax(x)[1] == 0.0
    assert ce.log_softmax(x)[1] == pytest.approx(-1000.0, rel=1e-15)


@pytest.mark.parametrize(
    "fn", [ce.softmax, ce.log_softmax, ce.logsumexp, ce.sigmoid, ce.softplus, ce.log_sigmoid]
)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_dtype_is_preserved(fn, dtype):
    x = np.linspace(-3, 3, 12, dtype=dtype).reshape(3, 4)
    assert fn(x).dtype == dtype


@pytest.mark.parametrize(
    "fn", [ce.softmax, ce.log_softmax, ce.logsumexp, ce.sigmoid, ce.softplus, ce.log_sigmoid]
)
def test_integers_are_promoted_to_float64(fn):
    assert fn(np.array([[1, 2, 3]])).dtype == np.float64


@pytest.mark.parametrize(
    "fn",
    [ce.softmax, ce.log_softmax, ce.logsumexp, ce.sigmoid, ce.softplus, ce.log_sigmoid, ce.softmax_jacobian],
)
def test_inputs_are_not_modified(fn):
    x = np.random.default_rng(2).normal(size=(4, 5))
    x[0, 0] = -np.inf
    before = x.copy()
    fn(x)
    np.testing.assert_array_equal(x, before)


def test_sigmoid_family_is_stable_at_extremes():
    x = np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s, sp_, ls = ce.sigmoid(x), ce.softplus(x), ce.log_sigmoid(x)
    np.testing.assert_allclose(s, sp.expit(x), rtol=1e-15)
    np.testing.assert_allclose(ls, sp.log_expit(x), rtol=1e-15)
    np.testing.assert_allclose(sp_, np.logaddexp(0, x), rtol=1e-15)
    assert ls[0] == -1000.0 and sp_[-1] == 1000.0 and sp_[1] == pytest.approx(np.exp(-40), rel=1e-12)


def test_softmax_jacobian_matches_finite_differences():
    z = np.random.default_rng(3).normal(size=5)
    numeric = np.stack([ce.numerical_gradient(lambda v, i=i: ce.softmax(v)[i], z) for i in range(5)])
    np.testing.assert_allclose(ce.softmax_jacobian(z), numeric, atol=1e-9)


def test_softmax_jacobian_batched_shape():
    z = np.random.default_rng(4).normal(size=(2, 3, 6)).astype(np.float32)
    jac = ce.softmax_jacobian(z)
    assert jac.shape == (2, 3, 6, 6) and jac.dtype == np.float32
    np.testing.assert_allclose(jac[1, 2], ce.softmax_jacobian(z[1, 2]), rtol=1e-6)


@pytest.mark.parametrize("fn", [ce.softmax, ce.log_softmax, ce.logsumexp])
def test_bad_axis_and_bad_dtype_are_rejected(fn):
    with pytest.raises(ValueError, match="axis=2 is out of bounds"):
        fn(np.zeros((2, 3)), axis=2)
    with pytest.raises(ValueError, match="axis must be an integer"):
        fn(np.zeros((2, 3)), axis=1.0)
    with pytest.raises(ValueError, match="axis=1 is out of bounds"):
        fn(np.float64(1.0), axis=1)  # a 0-d input is one class: only axis 0 or -1
    with pytest.raises(ValueError, match="real-valued"):
        fn(np.array(["a", "b"]))
    with pytest.raises(ValueError, match="real-valued"):
        fn(np.array([1 + 2j]))
