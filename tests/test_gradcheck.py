"""The finite-difference tools that every other gradient test relies on."""

from __future__ import annotations

import numpy as np
import pytest

import ce_lib as ce


def test_numerical_gradient_of_a_known_function():
    x = np.array([[0.3, -1.2], [2.0, 0.7]])
    grad = ce.numerical_gradient(lambda v: np.sum(np.sin(v) * v**2), x)
    np.testing.assert_allclose(grad, np.cos(x) * x**2 + 2 * x * np.sin(x), rtol=1e-8)


def test_numerical_gradient_leaves_its_input_alone_and_returns_float64():
    x = np.array([1.0, 2.0], dtype=np.float32)
    before = x.copy()
    grad = ce.numerical_gradient(lambda v: float(v @ v), x)
    np.testing.assert_array_equal(x, before)
    assert grad.dtype == np.float64
    np.testing.assert_allclose(grad, 2 * before, rtol=1e-8)


@pytest.mark.parametrize("view", ["transposed", "strided", "zero-d"])
def test_numerical_gradient_of_non_contiguous_and_scalar_inputs(view):
    base = np.arange(12.0).reshape(3, 4) / 7
    x = {"transposed": base.T, "strided": base[:, ::2], "zero-d": np.float64(0.3)}[view]
    grad = ce.numerical_gradient(lambda v: np.sum(v**3), x)
    np.testing.assert_allclose(grad, 3 * np.asarray(x) ** 2, rtol=1e-8)


def test_central_differences_are_second_order():
    f, x = (lambda v: float(np.exp(v[0]))), np.array([0.5])
    errors = [abs(ce.numerical_gradient(f, x, eps=h)[0] - np.exp(0.5)) for h in (1e-2, 1e-3)]
    assert 50 < errors[0] / errors[1] < 200  # error ~ h^2: ten times smaller h, ~100 times smaller error


def test_gradcheck_accepts_a_right_gradient_and_rejects_a_wrong_one():
    z = np.random.default_rng(0).normal(size=(3, 4))
    y = np.array([0, 2, 3])

    def loss(v):
        return ce.cross_entropy(v, y)

    good = ce.gradcheck(loss, z, ce.cross_entropy_grad(z, y))
    assert good.passed and bool(good) and good.relative_error < 1e-8
    assert "passed" in str(good)
    wrong = ce.cross_entropy_grad(z, y) * 3  # forgot the 1/N of the mean
    bad = ce.gradcheck(loss, z, wrong)
    assert not bad.passed and bad.relative_error > 0.1
    assert "FAILED" in str(bad)
    assert ce.gradcheck(loss, z, lambda v: ce.cross_entropy_grad(v, y)).passed


def test_relative_error_is_scale_free():
    a = np.array([1.0, 2.0, 3.0])
    assert ce.relative_error(a, a) == 0.0
    assert ce.relative_error(1e-9 * a, 1e-9 * 1.01 * a) == pytest.approx(ce.relative_error(a, 1.01 * a))
    assert ce.relative_error(np.zeros(3), np.zeros(3)) == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="eps must be positive; got 0"):
        ce.numerical_gradient(lambda v: 0.0, np.zeros(2), eps=0)
    with pytest.raises(ValueError, match=r"analytic gradient has shape \(3,\); x has shape \(2,\)"):
        ce.gradcheck(lambda v: 0.0, np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="shapes differ"):
        ce.relative_error(np.zeros(2), np.zeros(3))
