"""Part II functions: sparsemax, focal, margins, calibration, distillation, z-loss."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ce_lib as ce

RNG = np.random.default_rng(2024)
seeds = st.integers(0, 2**32 - 1)
reductions = st.sampled_from(["mean", "sum", "none"])


def assert_grad(loss, grad, x, *args, tolerance=1e-6, **kwargs):
    """The closed-form gradient equals central differences of the (summed) loss."""
    result = ce.gradcheck(lambda v: np.sum(loss(v, *args, **kwargs)), x, grad(x, *args, **kwargs))
    assert result.relative_error <= tolerance, str(result)


# ---------------------------------------------------------------------------
# sparsemax
# ---------------------------------------------------------------------------


def sparsemax_by_bisection(z):
    """Projection onto the simplex, found independently: sum(max(z - tau, 0)) = 1."""
    lo, hi = z.max() - 1.0, z.max()
    for _ in range(200):
        tau = 0.5 * (lo + hi)
        lo, hi = (tau, hi) if np.maximum(z - tau, 0).sum() > 1 else (lo, tau)
    return np.maximum(z - 0.5 * (lo + hi), 0)


@given(seeds, st.integers(1, 8))
def test_sparsemax_is_the_projection_onto_the_simplex(seed, c):
    z = np.random.default_rng(seed).normal(scale=2.0, size=(5, c))
    p = ce.sparsemax(z)
    np.testing.assert_allclose(p, np.stack([sparsemax_by_bisection(row) for row in z]), atol=1e-12)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-12)
    assert np.all(p >= 0)


def test_sparsemax_known_values_and_exact_zeros():
    np.testing.assert_allclose(ce.sparsemax(np.array([0.5, 0.2, -0.5])), [0.65, 0.35, 0.0], atol=1e-15)
    # all three in the support: tau = (0.6 - 1) / 3
    np.testing.assert_allclose(ce.sparsemax(np.array([0.5, 0.2, -0.1])), [19 / 30, 1 / 3, 1 / 30], atol=1e-15)
    np.testing.assert_allclose(ce.sparsemax(np.array([3.0, 1.0, 0.0])), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(ce.sparsemax(np.zeros(4)), np.full(4, 0.25))
    z = np.array([[1.0, 2.0], [0.3, 0.1]]).T  # class axis 0
    np.testing.assert_allclose(ce.sparsemax(z, axis=0), np.array([[0.0, 1.0], [0.6, 0.4]]).T, atol=1e-15)


@given(seeds, st.sampled_from(["index", "probability"]), reductions)
def test_sparsemax_loss_grad_and_nonnegativity(seed, kind, reduction):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(4, 5))
    target = rng.integers(0, 5, size=4) if kind == "index" else rng.dirichlet(np.ones(5), size=4)
    assert np.all(ce.sparsemax_loss(z, target, reduction="none") >= -1e-12)
    assert_grad(ce.sparsemax_loss, ce.sparsemax_loss_grad, z, target, reduction=reduction)


def test_sparsemax_loss_matches_martins_and_astudillo_formula():
    z = RNG.normal(size=(6, 5))
    y = RNG.integers(0, 5, size=6)
    p = ce.sparsemax(z)
    expected = []
    for row, label, prob in zip(z, y, p, strict=True):
        support = prob > 0
        tau = row[support][0] - prob[support][0]
        expected.append(-row[label] + 0.5 * np.sum(row[support] ** 2 - tau**2) + 0.5)
    np.testing.assert_allclose(ce.sparsemax_loss(z, y, reduction="none"), expected, rtol=1e-12)


def test_sparsemax_is_exactly_one_hot_beyond_the_margin():
    z = np.random.default_rng(11).normal(scale=3.0, size=(5000, 5))
    lead = np.sort(z, axis=1)[:, -1] - np.sort(z, axis=1)[:, -2]
    p = ce.sparsemax(z[lead >= 1])
    np.testing.assert_array_equal(p, np.eye(5)[np.argmax(z[lead >= 1], axis=1)])
    y = np.argmax(z[lead >= 1], axis=1)
    np.testing.assert_array_equal(ce.sparsemax_loss(z[lead >= 1], y, reduction="none"), 0.0)


def test_sparsemax_loss_has_a_separation_margin_of_one():
    z = np.array([[2.0, 1.0, 0.5], [2.0, 1.01, 0.5], [2.0, 0.99, 0.5]])
    y = np.array([0, 0, 0])
    loss = ce.sparsemax_loss(z, y, reduction="none")
    assert loss[0] == 0.0 and loss[2] == 0.0 and loss[1] > 0.0
    assert np.all(ce.cross_entropy(z, y, reduction="none") > 0)  # softmax never reaches 0


def test_sparsemax_non_finite_input():
    """-inf is a class outside the support; a slice without a finite maximum is NaN (both raised)."""
    np.testing.assert_array_equal(ce.sparsemax(np.array([0.0, -np.inf])), [1.0, 0.0])
    for bad in ([np.inf, 0.0], [np.nan, 0.0], [-np.inf, -np.inf]):
        assert np.isnan(ce.sparsemax(np.array(bad))).all()


def test_sparsemax_bad_input():
    with pytest.raises(ValueError, match=r"target contains class index 5"):
        ce.sparsemax_loss(np.zeros((2, 5)), np.array([0, 5]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        ce.sparsemax_loss_grad(np.zeros((2, 5)), np.array([0, 1]), reduction="avg")


# ---------------------------------------------------------------------------
# focal loss
# ---------------------------------------------------------------------------


def test_focal_with_gamma_zero_is_cross_entropy():
    z, y = RNG.normal(size=(7, 4)), RNG.integers(0, 4, size=7)
    w = RNG.uniform(0.5, 2, size=4)
    np.testing.assert_allclose(ce.focal_loss(z, y, gamma=0.0), ce.cross_entropy(z, y), rtol=1e-14)
    np.testing.assert_allclose(ce.focal_loss_grad(z, y, gamma=0.0), ce.cross_entropy_grad(z, y), rtol=1e-13)
    expected = ce.cross_entropy(z, y, weight=w, reduction="none")
    np.testing.assert_allclose(
        ce.focal_loss(z, y, gamma=0.0, alpha=w, reduction="none"), expected, rtol=1e-14
    )


def test_focal_value_by_hand():
    z = np.array([[2.0, 0.0, -1.0]])
    p = np.exp(z) / np.exp(z).sum()
    expected = -0.25 * (1 - p[0, 0]) ** 2 * np.log(p[0, 0])
    assert ce.focal_loss(z, np.array([0]), alpha=np.array([0.25, 1, 1])) == pytest.approx(expected, rel=1e-14)


@given(
    seeds,
    st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0]),
    st.booleans(),
    reductions,
    st.sampled_from([-1, 0]),
)
def test_focal_grad_matches_finite_differences(seed, gamma, weighted, reduction, axis):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2, size=(4, 4))
    y = rng.integers(0, 4, size=4)
    alpha = rng.uniform(0.2, 1.0, size=4) if weighted else None
    assert_grad(
        ce.focal_loss,
        ce.focal_loss_grad,
        z,
        y,
        gamma=gamma,
        alpha=alpha,
        reduction=reduction,
        axis=axis,
    )


def test_focal_grad_is_finite_for_a_certain_correct_prediction():
    z = np.array([[100.0, 0.0, 0.0]])
    for gamma in (0.5, 2.0):
        g = ce.focal_loss_grad(z, np.array([0]), gamma=gamma)
        assert np.all(np.isfinite(g)) and np.all(np.abs(g) < 1e-40)


def torchvision_sigmoid_focal(z, t, alpha, gamma):
    """torchvision.ops.sigmoid_focal_loss, written out from its documented source."""
    p = 1 / (1 + np.exp(-z))
    ce_loss = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce_loss * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1.0, 0.0), (0.5, 1.0), (0.25, 0.5)])
def test_sigmoid_focal_matches_torchvision_formula(alpha, gamma):
    z = RNG.normal(scale=3, size=(5, 3))
    t = (RNG.random((5, 3)) > 0.6).astype(float)
    expected = torchvision_sigmoid_focal(z, t, alpha, gamma)
    np.testing.assert_allclose(
        ce.sigmoid_focal_loss(z, t, alpha=alpha, gamma=gamma, reduction="none"),
        expected,
        rtol=1e-12,
    )
    assert_grad(ce.sigmoid_focal_loss, ce.sigmoid_focal_loss_grad, z, t, alpha=alpha, gamma=gamma)


def test_sigmoid_focal_reduces_to_bce_with_logits():
    z = RNG.normal(scale=3, size=(4, 2))
    t = (RNG.random((4, 2)) > 0.5).astype(float)
    opts = dict(alpha=-1.0, gamma=0.0)
    np.testing.assert_allclose(
        ce.sigmoid_focal_loss(z, t, **opts), ce.binary_cross_entropy_with_logits(z, t), rtol=1e-13
    )
    np.testing.assert_allclose(
        ce.sigmoid_focal_loss_grad(z, t, **opts),
        ce.binary_cross_entropy_with_logits_grad(z, t),
        rtol=1e-13,
    )


def test_focal_bad_input():
    z, y = np.zeros((2, 3)), np.array([0, 1])
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0; got -1"):
        ce.focal_loss(z, y, gamma=-1)
    with pytest.raises(ValueError, match=r"one entry per class \(3\)"):
        ce.focal_loss_grad(z, y, alpha=np.ones(2))
    with pytest.raises(ValueError, match="only 0 and 1"):
        ce.sigmoid_focal_loss(z, np.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="alpha must be in"):
        ce.sigmoid_focal_loss_grad(z, np.ones((2, 3)), alpha=1.5)
    with pytest.raises(ValueError, match="target must have the same shape"):
        ce.sigmoid_focal_loss(z, np.ones((3, 2)))


# ---------------------------------------------------------------------------
# cosine logits and margin losses
# ---------------------------------------------------------------------------


def test_cosine_logits_and_their_gradient():
    h, w = RNG.normal(size=(5, 3)), RNG.normal(size=(4, 3))
    cos = ce.cosine_logits(h, w)
    expected = (h / np.linalg.norm(h, axis=1, keepdims=True)) @ (
        w / np.linalg.norm(w, axis=1, keepdims=True)
    ).T
    np.testing.assert_allclose(cos, expected, rtol=1e-13)
    upstream = RNG.normal(size=(5, 4))
    gh, gw = ce.cosine_logits_grad(h, w, upstream)
    assert ce.gradcheck(lambda v: np.sum(ce.cosine_logits(v, w) * upstream), h, gh).passed
    assert ce.gradcheck(lambda v: np.sum(ce.cosine_logits(h, v) * upstream), w, gw).passed
    np.testing.assert_allclose(np.sum(gh * h, axis=1), 0, atol=1e-12)  # rescaling h changes nothing


def test_am_softmax_is_cross_entropy_on_shifted_scaled_cosines():
    cos = np.tanh(RNG.normal(size=(6, 5)))
    y = RNG.integers(0, 5, size=6)
    onehot = np.eye(5)[y]
    z = 30 * (cos - 0.35 * onehot)
    manual = -(z[np.arange(6), y] - np.log(np.exp(z).sum(axis=1)))
    np.testing.assert_allclose(ce.am_softmax_loss(cos, y, reduction="none"), manual, rtol=1e-12)
    np.testing.assert_allclose(
        ce.am_softmax_loss(cos, y, s=5, m=0.0), ce.cross_entropy(5 * cos, y), rtol=1e-14
    )


@given(seeds, st.sampled_from([0.0, 0.2, 0.5]), reductions, st.sampled_from([-1, 0]))
def test_margin_losses_grad_match_finite_differences(seed, m, reduction, axis):
    rng = np.random.default_rng(seed)
    cos = np.tanh(rng.normal(size=(4, 4)))  # strictly inside (-1, 1)
    y = rng.integers(0, 4, size=4)
    opts = dict(s=4.0, m=m, reduction=reduction, axis=axis)
    assert_grad(ce.am_softmax_loss, ce.am_softmax_loss_grad, cos, y, **opts)
    assert_grad(ce.arcface_loss, ce.arcface_loss_grad, cos, y, tolerance=1e-5, **opts)


def test_arcface_adds_the_margin_to_the_angle():
    cos = np.array([[0.6, 0.1, -0.3], [-0.95, 0.2, 0.0]])
    y = np.array([0, 0])
    s, m = 10.0, 0.5
    theta = np.arccos(cos[:, 0])
    # row 0: theta + m < pi, so cos(theta + m); row 1: theta + m > pi, so the linear continuation
    assert theta[0] + m < np.pi < theta[1] + m
    target = np.array([np.cos(theta[0] + m), cos[1, 0] - m * np.sin(m)])
    z = s * cos.copy()
    z[:, 0] = s * target
    manual = -(z[:, 0] - np.log(np.exp(z).sum(axis=1)))
    np.testing.assert_allclose(ce.arcface_loss(cos, y, s=s, m=m, reduction="none"), manual, rtol=1e-12)


def test_cosine_logits_on_a_stack_of_models_equals_one_call_per_model():
    """A leading axis holds independent models (e.g. one per seed); each slice is the 2-d computation."""
    rng = np.random.default_rng(3)
    H, W, G = rng.normal(size=(4, 6, 3)), rng.normal(size=(4, 5, 3)), rng.normal(size=(4, 6, 5))
    cos = ce.cosine_logits(H, W)
    g_h, g_w = ce.cosine_logits_grad(H, W, G)
    for k in range(4):
        np.testing.assert_allclose(cos[k], ce.cosine_logits(H[k], W[k]), rtol=1e-14, atol=1e-15)
        one_h, one_w = ce.cosine_logits_grad(H[k], W[k], G[k])
        np.testing.assert_allclose(g_h[k], one_h, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(g_w[k], one_w, rtol=1e-13, atol=1e-15)


def test_margin_losses_bad_input():
    y = np.array([0, 1])
    with pytest.raises(ValueError, match=r"cosines must lie in \[-1, 1\]; found 1.5"):
        ce.am_softmax_loss(np.array([[1.5, 0.0], [0.0, 0.0]]), y)
    with pytest.raises(ValueError, match="s must be a positive scale; got 0"):
        ce.arcface_loss(np.zeros((2, 2)), y, s=0)
    with pytest.raises(ValueError, match="m must be a finite margin"):
        ce.arcface_loss_grad(np.zeros((2, 2)), y, m=np.nan)
    with pytest.raises(ValueError, match=r"features must be \(\.\.\., N, d\) and weights \(\.\.\., C, d\)"):
        ce.cosine_logits(np.ones((2, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"the same leading shape; got features.shape=\(5, 2, 3\)"):
        ce.cosine_logits(np.ones((5, 2, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="features has a row of zeros"):
        ce.cosine_logits(np.zeros((2, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"upstream must have shape \(\.\.\., N, C\) = \(2, 4\)"):
        ce.cosine_logits_grad(np.ones((2, 3)), np.ones((4, 3)), np.ones((4, 2)))


# ---------------------------------------------------------------------------
# temperature scaling, calibration, distillation
# ---------------------------------------------------------------------------


def test_distillation_gradient_scaling_with_temperature():
    """The docstring's account of where 1/T enters: T^2 times the KL gradient tends to the centred gap / C.

    (So the KL gradient itself, that divided by T^2, shrinks like 1/T^2.)
    """
    rng = np.random.default_rng(11)
    s, t = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    centred = ((s - s.mean(-1, keepdims=True)) - (t - t.mean(-1, keepdims=True))) / s.shape[-1]
    errors = []
    for T in (10.0, 100.0, 1000.0):
        g = ce.distillation_loss_grad(s, t, temperature=T, reduction="sum")
        errors.append(np.abs(g - centred).max())
        assert errors[-1] < 5 / T * np.abs(centred).max()  # T(p - q) -> centred gap / C, O(1) in T
    # the limit is approached like 1/T: each tenfold T divides the error by about ten
    assert errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5


def test_fit_temperature_recovers_the_overconfidence_factor():
    rng = np.random.default_rng(7)
    true_logits = rng.normal(scale=1.5, size=(20000, 5))
    labels = np.array([rng.choice(5, p=p) for p in ce.softmax(true_logits)])
    t_star = ce.fit_temperature(3.0 * true_logits, labels)  # a model 3x too confident
    assert t_star == pytest.approx(3.0, rel=0.05)
    # first-order optimality: the derivative in beta = 1/T vanishes at T*
    z = 3.0 * true_logits / t_star
    slope = np.mean(
        np.sum(ce.softmax(z) * 3.0 * true_logits, axis=1) - 3.0 * true_logits[np.arange(20000), labels]
    )
    assert abs(slope) < 1e-6
    nll = [ce.cross_entropy(3.0 * true_logits / t, labels) for t in (0.9 * t_star, t_star, 1.1 * t_star)]
    assert nll[1] < nll[0] and nll[1] < nll[2]


def test_fit_temperature_refuses_separable_data():
    z = np.array([[5.0, 0.0], [0.0, 5.0]])
    with pytest.raises(ValueError, match="no finite temperature is optimal"):
        ce.fit_temperature(z, np.array([0, 1]))
    with pytest.raises(ValueError, match="bounds must satisfy"):
        ce.fit_temperature(z, np.array([0, 1]), bounds=(2.0, 1.0))


def test_ece_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    labels = np.array([0, 1, 1, 0])
    bins = ce.calibration_bins(probs, labels, n_bins=2)
    # bin (0, .5] is empty; bin (.5, 1] holds all four: confidence .7375, accuracy .5
    np.testing.assert_array_equal(bins.count, [0, 4])
    assert bins.confidence[1] == pytest.approx(0.7375) and bins.accuracy[1] == pytest.approx(0.5)
    assert ce.expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(0.2375)
    # with 10 bins: (.5,.6]: .55 wrong; (.6,.7]: .7 right; (.7,.8]: .8 wrong; (.8,.9]: .9 right
    expected = (0.55 + 0.3 + 0.8 + 0.1) / 4
    assert ce.expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(expected)


def test_ece_of_a_calibrated_model_is_small():
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=2, size=(50000, 4))
    probs = ce.softmax(logits)
    labels = np.array([rng.choice(4, p=p) for p in probs])
    assert ce.expected_calibration_error(probs, labels) < 0.01
    assert ce.expected_calibration_error(ce.softmax(3 * logits), labels) > 0.05


def test_calibration_bad_input():
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        ce.calibration_bins(np.full((2, 2), 0.5), np.array([0, 1]), n_bins=0)
    with pytest.raises(ValueError, match="probs must be probabilities"):
        ce.expected_calibration_error(np.array([[1.5, -0.5]]), np.array([0]))


def test_distillation_is_t_squared_kl():
    s, t = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4))
    T = 4.0
    q, p = ce.softmax(t / T), ce.softmax(s / T)
    expected = T**2 * np.sum(q * np.log(q / p), axis=1)
    np.testing.assert_allclose(
        ce.distillation_loss(s, t, temperature=T, reduction="none"), expected, rtol=1e-12
    )
    assert ce.distillation_loss(t, t, temperature=T) == pytest.approx(0.0, abs=1e-15)


@given(seeds, st.sampled_from([0.5, 1.0, 4.0]), reductions)
def test_distillation_grad_matches_finite_differences(seed, temperature, reduction):
    rng = np.random.default_rng(seed)
    s, t = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    assert_grad(
        ce.distillation_loss,
        ce.distillation_loss_grad,
        s,
        t,
        temperature=temperature,
        reduction=reduction,
    )


def test_distillation_gradient_size_is_stable_in_t():
    s, t = RNG.normal(size=(200, 10)), RNG.normal(size=(200, 10))
    norms = [np.linalg.norm(ce.distillation_loss_grad(s, t, temperature=T)) for T in (5.0, 20.0, 80.0)]
    assert max(norms) / min(norms) < 1.2  # without T**2 they would shrink like 1/T**2... times T: 1/T


def test_distillation_bad_input():
    with pytest.raises(ValueError, match="temperature must be positive"):
        ce.distillation_loss(np.zeros((1, 2)), np.zeros((1, 2)), temperature=0)
    with pytest.raises(ValueError, match="teacher_logits must have the same shape as student_logits"):
        ce.distillation_loss_grad(np.zeros((1, 2)), np.zeros((1, 3)))


# ---------------------------------------------------------------------------
# z-loss
# ---------------------------------------------------------------------------


def test_z_loss_value_and_grad():
    z = RNG.normal(size=(4, 6)) + 3
    np.testing.assert_allclose(ce.z_loss(z, reduction="none"), ce.logsumexp(z) ** 2, rtol=1e-14)
    for reduction in ("mean", "sum", "none"):
        assert_grad(ce.z_loss, ce.z_loss_grad, z, reduction=reduction)
    assert_grad(ce.z_loss, ce.z_loss_grad, np.moveaxis(z, 0, 1), axis=0)
    with pytest.raises(ValueError, match="empty class axis"):
        ce.z_loss(np.zeros((2, 0)))
