"""Property tests (Hypothesis): identities that must hold for every input and option."""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ce_lib as ce

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
logit_rows = hnp.arrays(
    np.float64, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6), elements=finite
)
seeds = st.integers(0, 2**32 - 1)
reductions = st.sampled_from(["mean", "sum", "none"])


@given(logit_rows, st.floats(-1e3, 1e3))
def test_softmax_is_a_distribution_and_shift_invariant(z, c):
    s = ce.softmax(z)
    assert np.all((s >= 0) & (s <= 1))
    np.testing.assert_allclose(s.sum(axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(ce.softmax(z + c), s, atol=1e-12)
    np.testing.assert_allclose(ce.logsumexp(z + c), ce.logsumexp(z) + c, rtol=1e-12, atol=1e-9)


@given(logit_rows)
def test_logsumexp_bounds_and_log_softmax(z):
    lse, m = ce.logsumexp(z), z.max(axis=-1)
    n = z.shape[-1]
    assert np.all(lse >= m) and np.all(lse <= m + np.log(n) + 1e-9 * (1 + np.abs(m)))
    np.testing.assert_allclose(np.exp(ce.log_softmax(z)), ce.softmax(z), atol=1e-12)


@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 7)), elements=st.floats(-30, 30)))
def test_softmax_jacobian_is_symmetric_psd_with_ones_in_null_space(z):
    jac = ce.softmax_jacobian(z)
    np.testing.assert_allclose(jac, np.swapaxes(jac, -1, -2), atol=1e-15)
    assert np.all(np.linalg.eigvalsh(jac) >= -1e-12)
    np.testing.assert_allclose(jac @ np.ones(z.shape[-1]), 0.0, atol=1e-14)
    # v^T J v is the variance of v under the distribution s
    v = np.arange(z.shape[-1], dtype=float)
    s = ce.softmax(z)
    variance = s @ v**2 - (s @ v) ** 2
    np.testing.assert_allclose(np.einsum("i,nij,j->n", v, jac, v), variance, atol=1e-12)


@given(seeds, st.integers(1, 6), st.integers(1, 5))
def test_hinge_lse_softplus_chain_lands_on_cross_entropy(seed, n, c):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=rng.choice([1.0, 10.0, 300.0]), size=(n, c))
    y = rng.integers(0, c, size=n)
    others = np.where(np.arange(c) == y[:, None], -np.inf, z)
    gap = ce.logsumexp(others) - z[np.arange(n), y]
    ce_loss = ce.cross_entropy(z, y, reduction="none")
    np.testing.assert_allclose(ce.softplus(gap), ce_loss, rtol=1e-12, atol=1e-300)
    lse_hinge = ce.lse_hinge_loss(z, y, reduction="none")
    hinge = ce.hinge_loss(z, y, reduction="none")
    np.testing.assert_allclose(lse_hinge, np.maximum(gap, 0.0), rtol=1e-12)
    # hinge <= lse-hinge <= cross-entropy <= lse-hinge + log 2, and lse-hinge <= hinge + log(C - 1)
    assert np.all(hinge <= lse_hinge + 1e-12)
    assert np.all(lse_hinge <= ce_loss + 1e-12) and np.all(ce_loss <= lse_hinge + np.log(2) + 1e-12)
    if c > 1:
        assert np.all(lse_hinge <= hinge + np.log(c - 1) + 1e-9)


def _check(loss, grad, x, target, **options):
    """grad(x) must equal the central-difference gradient of loss(x) (summed for "none")."""
    numeric = ce.numerical_gradient(lambda v: np.sum(loss(v, target, **options)), x)
    result = ce.gradcheck(lambda v: np.sum(loss(v, target, **options)), x, grad(x, target, **options))
    assert result.passed, f"{result}\nanalytic={grad(x, target, **options)}\nnumeric={numeric}"


@given(
    seeds,
    st.sampled_from(["index", "probability"]),
    st.booleans(),
    st.booleans(),
    reductions,
    st.sampled_from([0.0, 0.1, 1.0]),
    st.sampled_from([-1, 0, 1]),
)
def test_cross_entropy_grad_matches_finite_differences(
    seed, kind, weighted, ignore, reduction, smoothing, axis
):
    rng = np.random.default_rng(seed)
    shape = (4, 5, 2)  # the class axis is `axis`; C = shape[axis]
    z = rng.normal(scale=2.0, size=shape)
    n_classes = shape[axis]
    batch_shape = tuple(np.delete(shape, axis % 3))
    options = dict(axis=axis, reduction=reduction, label_smoothing=smoothing)
    if weighted:
        options["weight"] = rng.uniform(0.2, 3.0, size=n_classes)
    if kind == "index":
        target = rng.integers(0, n_classes, size=batch_shape)
        if ignore:
            target.flat[0] = -100
    else:
        target = np.moveaxis(rng.dirichlet(np.ones(n_classes), size=batch_shape), -1, axis % 3)
        if ignore:  # unnormalised soft targets are allowed: the gradient is (sum y) p - y
            target = 1.7 * target
    _check(ce.cross_entropy, ce.cross_entropy_grad, z, target, **options)


@given(seeds, st.booleans(), st.booleans(), reductions)
def test_bce_with_logits_grad_matches_finite_differences(seed, weighted, pos_weighted, reduction):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=3.0, size=(4, 3))
    t = rng.random((4, 3))
    options = dict(reduction=reduction)
    if weighted:
        options["weight"] = rng.uniform(0.5, 2.0, size=(4, 1))
    if pos_weighted:
        options["pos_weight"] = rng.uniform(0.5, 3.0, size=3)
    _check(ce.binary_cross_entropy_with_logits, ce.binary_cross_entropy_with_logits_grad, z, t, **options)


@given(seeds, st.booleans(), reductions)
def test_bce_and_mse_grads_match_finite_differences(seed, weighted, reduction):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.05, 0.95, size=(3, 4))
    t = rng.random((3, 4))
    weight = rng.uniform(0.5, 2.0, size=4) if weighted else None
    _check(ce.binary_cross_entropy, ce.binary_cross_entropy_grad, a, t, weight=weight, reduction=reduction)
    _check(ce.mse_loss, ce.mse_loss_grad, a, t, reduction=reduction)


def _away_from_kinks(z, y, margin, smooth):
    """The finite-difference check is only valid where the loss is differentiable."""
    c = z.shape[-1]
    zy = np.take_along_axis(z, y[..., None], -1)[..., 0]
    others = np.where(np.arange(c) == y[..., None], -np.inf, z)
    if smooth:
        gaps = ce.logsumexp(others) - zy + margin
    else:
        top2 = np.sort(others, axis=-1)[..., -2:]
        if c > 2 and np.any(np.abs(top2[..., 1] - top2[..., 0]) < 1e-3):
            return False
        gaps = top2[..., 1] - zy + margin
    return np.all(np.abs(gaps) > 1e-3)


@given(seeds, st.sampled_from([0.0, 0.5]), reductions, st.sampled_from([-1, 0]))
def test_hinge_chain_grads_match_finite_differences(seed, margin, reduction, axis):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(5, 4))
    y = rng.integers(0, z.shape[axis], size=z.shape[1 - axis % 2])
    last = np.moveaxis(z, axis, -1)
    assume(_away_from_kinks(last, y, margin, smooth=False) and _away_from_kinks(last, y, margin, smooth=True))
    options = dict(margin=margin, reduction=reduction, axis=axis)
    _check(ce.hinge_loss, ce.hinge_loss_grad, z, y, **options)
    _check(ce.lse_hinge_loss, ce.lse_hinge_loss_grad, z, y, **options)


@given(seeds, st.sampled_from([1, 2]), st.sampled_from([0.5, 1.0]), st.booleans(), reductions)
def test_multi_margin_grad_matches_finite_differences(seed, p, margin, weighted, reduction):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(5, 4))
    y = rng.integers(0, 4, size=5)
    hinge = margin - z[np.arange(5), y][:, None] + z
    hinge[np.arange(5), y] = 1.0
    assume(np.all(np.abs(hinge) > 1e-3))
    weight = rng.uniform(0.5, 2.0, size=4) if weighted else None
    _check(
        ce.multi_margin_loss,
        ce.multi_margin_loss_grad,
        z,
        y,
        p=p,
        margin=margin,
        weight=weight,
        reduction=reduction,
    )


@given(seeds, st.integers(2, 6))
def test_cross_entropy_gradient_is_bounded_and_sums_to_zero(seed, c):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=50.0, size=(8, c))
    y = rng.integers(0, c, size=8)
    g = ce.cross_entropy_grad(z, y, reduction="sum")
    assert np.all(np.abs(g) <= 1.0)
    np.testing.assert_allclose(g.sum(axis=-1), 0.0, atol=1e-12)
