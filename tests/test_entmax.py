"""alpha-entmax: entmax15 (exact, sort-based) and entmax_bisect (any alpha > 1)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ce_lib as ce

seeds = st.integers(0, 2**32 - 1)


def random_logits(seed: int, shape=(40, 7), scale=3.0):
    return scale * np.random.default_rng(seed).normal(size=shape)


def tsallis_objective(z, p, alpha):
    """<z, p> + H_alpha(p), the quantity alpha-entmax maximises over the simplex."""
    return p @ z + np.sum(p - p**alpha) / (alpha * (alpha - 1))


@pytest.mark.parametrize("fn", [ce.entmax15, lambda z, axis=-1: ce.entmax_bisect(z, 1.3, axis=axis)])
@given(seed=seeds)
def test_output_on_simplex(fn, seed):
    p = fn(random_logits(seed))
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, atol=1e-12)


@given(seed=seeds)
def test_entmax15_exact_matches_bisection(seed):
    z = random_logits(seed)
    np.testing.assert_allclose(ce.entmax15(z), ce.entmax_bisect(z, 1.5), atol=1e-12)


@given(seed=seeds)
def test_alpha_two_is_sparsemax(seed):
    z = random_logits(seed)
    np.testing.assert_allclose(ce.entmax_bisect(z, 2.0), ce.sparsemax(z), atol=1e-12)


def test_alpha_to_one_approaches_softmax():
    z = random_logits(0)
    errors = [np.abs(ce.entmax_bisect(z, 1 + d) - ce.softmax(z)).max() for d in (1e-1, 1e-2, 1e-3)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 2e-3  # the error shrinks roughly in proportion to alpha - 1


def test_known_small_cases():
    # uniform logits give the uniform distribution
    np.testing.assert_allclose(ce.entmax15(np.zeros(4)), np.full(4, 0.25), atol=1e-15)
    # z = (2, 0): u = z/2 = (1, 0); with both in the support, (1 - tau)^2 + tau^2 = 1 gives
    # tau = 0 and p = (1, 0) with the second entry exactly at the edge of the support.
    np.testing.assert_allclose(ce.entmax15([2.0, 0.0]), [1.0, 0.0], atol=1e-15)
    # z = (1, 0): u = (0.5, 0); (0.5 - tau)^2 + tau^2 = 1 gives tau = (0.5 - sqrt(1.75))/2
    tau = (0.5 - np.sqrt(1.75)) / 2
    np.testing.assert_allclose(ce.entmax15([1.0, 0.0]), [(0.5 - tau) ** 2, tau**2], atol=1e-15)
    # a lead of 1 / (alpha - 1) = 2 or more over every other logit gives a one-hot output
    np.testing.assert_array_equal(ce.entmax15([4.0, 2.0, 1.0]), [1.0, 0.0, 0.0])


@given(seed=seeds)
def test_entmax15_maximises_the_tsallis_objective(seed):
    rng = np.random.default_rng(seed)
    z = 2 * rng.normal(size=5)
    p = ce.entmax15(z)
    q = rng.dirichlet(np.ones(5), size=500)
    best = max(tsallis_objective(z, row, 1.5) for row in q)
    assert tsallis_objective(z, p, 1.5) >= best


def test_axis_and_shift_invariance_and_dtype():
    z = random_logits(1, shape=(3, 5, 4))
    for fn in (ce.entmax15, lambda v, axis=-1: ce.entmax_bisect(v, 1.7, axis=axis)):
        np.testing.assert_allclose(fn(z, axis=1), np.moveaxis(fn(np.moveaxis(z, 1, -1)), -1, 1), atol=1e-15)
        np.testing.assert_allclose(fn(z + 100.0), fn(z), atol=1e-12)
    assert ce.entmax15(z.astype(np.float32)).dtype == np.float32
    assert ce.entmax_bisect(z.astype(np.float32), 1.5).dtype == np.float32


@pytest.mark.parametrize("alpha", [1.0, 0.5, -2.0, np.inf, np.nan, [1.5, 2.0]])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        ce.entmax_bisect(np.zeros(3), alpha)


@pytest.mark.parametrize("fn", [ce.entmax15, ce.entmax_bisect])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_non_finite_input(fn, bad):
    """+inf or NaN: the slice has no distribution and is NaN (it used to raise); others unharmed."""
    p = fn(np.array([[0.0, bad, 1.0], [0.0, 1.0, 2.0]]))
    assert np.isnan(p[0]).all() and np.isfinite(p[1]).all()


@pytest.mark.parametrize("fn", [ce.entmax15, ce.entmax_bisect])
def test_neg_inf_is_probability_zero(fn):
    """A -inf logit is a class outside the support (it used to raise); all -inf is NaN."""
    p = fn(np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf]]))
    np.testing.assert_allclose(p[0], fn(np.array([0.0, -50.0, 1.0])), atol=1e-15)
    assert p[0, 1] == 0.0 and np.isnan(p[1]).all()


@pytest.mark.parametrize("fn", [ce.entmax15, ce.entmax_bisect])
def test_empty_class_axis(fn):
    with pytest.raises(ValueError, match="empty"):
        fn(np.zeros((3, 0)))
