"""Losses: edge cases that users rely on, dtypes, and every bad input."""

from __future__ import annotations

import numpy as np
import pytest

import ce_lib as ce

RNG = np.random.default_rng(12)
Z = RNG.normal(size=(6, 4))
Y = np.array([0, 3, 1, 2, 3, 0])
PROBS = ce.sigmoid(RNG.normal(size=(5, 3)))
BIN_T = (RNG.random((5, 3)) > 0.5).astype(float)

# (loss, grad, logits, target) for every loss with integer class targets.
CLASS_LOSSES = [
    (ce.cross_entropy, ce.cross_entropy_grad),
    (ce.multi_margin_loss, ce.multi_margin_loss_grad),
    (ce.hinge_loss, ce.hinge_loss_grad),
    (ce.lse_hinge_loss, ce.lse_hinge_loss_grad),
]
ELEMENTWISE_LOSSES = [
    (ce.binary_cross_entropy, ce.binary_cross_entropy_grad),
    (ce.binary_cross_entropy_with_logits, ce.binary_cross_entropy_with_logits_grad),
    (ce.mse_loss, ce.mse_loss_grad),
]
ALL = CLASS_LOSSES + ELEMENTWISE_LOSSES


def _args(loss):
    """A valid (first argument, target) pair for a loss."""
    return (Z, Y) if any(loss is c[0] for c in CLASS_LOSSES) else (PROBS, BIN_T)


# ---------------------------------------------------------------------------
# Numerics users rely on
# ---------------------------------------------------------------------------


def test_cross_entropy_with_huge_float64_logits():
    z = np.array([[1e4, -1e4, 0.0], [1e4, -1e4, 0.0]])
    y = np.array([0, 1])
    np.testing.assert_allclose(ce.cross_entropy(z, y, reduction="none"), [0.0, 2e4])
    g = ce.cross_entropy_grad(z, y, reduction="none")
    np.testing.assert_allclose(g, [[0, 0, 0], [1, -1, 0]], atol=1e-300)


def test_cross_entropy_with_uniform_1e8_float32_logits():
    z = np.full((3, 10), 1e8, dtype=np.float32)
    y = np.array([0, 4, 9])
    loss = ce.cross_entropy(z, y)
    assert loss.dtype == np.float32
    assert loss == pytest.approx(np.log(10), rel=1e-6)
    g = ce.cross_entropy_grad(z, y)
    np.testing.assert_allclose(g.sum(axis=1), 0, atol=1e-7)
    np.testing.assert_allclose(g[0, 1], 0.1 / 3, rtol=1e-6)


def test_minus_inf_logit_on_a_non_target_class():
    z = np.array([[2.0, -np.inf, 0.5], [-np.inf, 1.0, 1.0]])
    y = np.array([0, 2])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss = ce.cross_entropy(z, y, reduction="none")
        g = ce.cross_entropy_grad(z, y)
    np.testing.assert_allclose(loss, [np.log1p(np.exp(-1.5)), np.log(2)], rtol=1e-15)
    assert g[0, 1] == 0.0 and g[1, 0] == 0.0
    assert np.all(np.isfinite(g))


def test_minus_inf_logit_on_the_target_class_costs_infinity():
    z = np.array([[-np.inf, 0.0]])
    assert ce.cross_entropy(z, np.array([0])) == np.inf


def test_bce_with_logits_is_stable_at_plus_minus_1000():
    z = np.array([1000.0, -1000.0, 1000.0, -1000.0])
    t = np.array([1.0, 0.0, 0.0, 1.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss = ce.binary_cross_entropy_with_logits(z, t, reduction="none")
        g = ce.binary_cross_entropy_with_logits_grad(z, t, reduction="none")
    np.testing.assert_allclose(loss, [0.0, 0.0, 1000.0, 1000.0])
    np.testing.assert_allclose(g, [0.0, 0.0, 1.0, -1.0])


def test_bce_clamps_the_log_at_minus_100_like_pytorch():
    loss = ce.binary_cross_entropy(np.array([0.0, 1.0]), np.array([1.0, 0.0]), reduction="none")
    np.testing.assert_array_equal(loss, [100.0, 100.0])


def test_all_targets_ignored_gives_nan_mean_like_pytorch():
    z = Z[:2]
    y = np.array([-100, -100])
    assert np.isnan(ce.cross_entropy(z, y))
    assert ce.cross_entropy(z, y, reduction="sum") == 0.0
    np.testing.assert_array_equal(ce.cross_entropy_grad(z, y, reduction="sum"), 0.0)


def test_ignore_index_drops_the_element_from_loss_gradient_and_mean():
    y = Y.copy()
    y[2] = -100
    keep = y != -100
    np.testing.assert_allclose(ce.cross_entropy(Z, y), ce.cross_entropy(Z[keep], y[keep]), rtol=1e-15)
    g = ce.cross_entropy_grad(Z, y)
    np.testing.assert_array_equal(g[2], 0.0)
    np.testing.assert_allclose(g[keep], ce.cross_entropy_grad(Z[keep], y[keep]), rtol=1e-15)


def test_custom_ignore_index():
    y = Y.copy()
    y[0] = 7
    assert np.isfinite(ce.cross_entropy(Z, y, ignore_index=7))


@pytest.mark.parametrize("loss, grad", ALL)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_in_is_dtype_out(loss, grad, dtype):
    x, t = _args(loss)
    x = x.astype(dtype)
    assert loss(x, t).dtype == dtype
    assert loss(x, t, reduction="none").dtype == dtype
    assert grad(x, t).dtype == dtype


@pytest.mark.parametrize("loss, grad", CLASS_LOSSES)
def test_integer_logits_are_promoted_to_float64(loss, grad):
    z = np.array([[3, 1, 2], [0, 5, 1]])
    assert loss(z, np.array([0, 1])).dtype == np.float64
    assert grad(z, np.array([0, 1])).dtype == np.float64


@pytest.mark.parametrize("loss, grad", ALL)
def test_inputs_are_never_modified(loss, grad):
    x, t = _args(loss)
    x, t = x.copy(), t.copy()
    x0, t0 = x.copy(), t.copy()
    for reduction in ("none", "mean", "sum"):
        loss(x, t, reduction=reduction)
        grad(x, t, reduction=reduction)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(t, t0)


@pytest.mark.parametrize("loss, grad", ALL)
def test_reductions_are_consistent(loss, grad):
    x, t = _args(loss)
    per = loss(x, t, reduction="none")
    assert loss(x, t, reduction="sum") == pytest.approx(per.sum(), rel=1e-13)
    assert loss(x, t, reduction="mean") == pytest.approx(per.mean(), rel=1e-13)
    np.testing.assert_allclose(grad(x, t, reduction="none"), grad(x, t, reduction="sum"), rtol=1e-15)
    np.testing.assert_allclose(
        grad(x, t, reduction="mean") * per.size, grad(x, t, reduction="sum"), rtol=1e-12
    )


@pytest.mark.parametrize("loss, grad", CLASS_LOSSES)
def test_class_axis_can_be_anywhere(loss, grad):
    z = RNG.normal(size=(2, 5, 3, 4))  # PyTorch layout (N, C, d1, d2)
    y = RNG.integers(0, 5, size=(2, 3, 4))
    last = np.moveaxis(z, 1, -1)
    np.testing.assert_allclose(
        loss(z, y, axis=1, reduction="none"), loss(last, y, reduction="none"), rtol=1e-15
    )
    np.testing.assert_allclose(grad(z, y, axis=1), np.moveaxis(grad(last, y), -1, 1), rtol=1e-15)


def test_unbatched_input():
    z = np.array([1.0, 2.0, 0.5])
    assert ce.cross_entropy(z, np.array(1)) == pytest.approx(-ce.log_softmax(z)[1])
    assert ce.cross_entropy_grad(z, 1).shape == (3,)


def test_one_class_hinge_chain_is_zero():
    z = np.array([[3.0], [-2.0]])
    y = np.array([0, 0])
    for loss in (ce.hinge_loss, ce.lse_hinge_loss, ce.cross_entropy):
        np.testing.assert_array_equal(loss(z, y, reduction="none"), 0.0)
    np.testing.assert_array_equal(ce.lse_hinge_loss_grad(z, y), 0.0)


# ---------------------------------------------------------------------------
# Bad input: a ValueError that names the argument and the value or shape
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss, grad, bad",
    [
        (loss, grad, bad)
        for loss, grad in CLASS_LOSSES
        for bad in (4, -1, -100)
        if not (loss is ce.cross_entropy and bad == -100)
    ],
)
def test_labels_out_of_range(loss, grad, bad):
    """-100 is an error everywhere except as cross_entropy's default ignore_index."""
    y = Y.copy()
    y[1] = bad
    for fn in (loss, grad):
        with pytest.raises(ValueError, match=rf"target contains class index {bad}, outside \[0, 3\]"):
            fn(Z, y)


@pytest.mark.parametrize("loss, grad", CLASS_LOSSES)
def test_label_shape_mismatch(loss, grad):
    for fn in (loss, grad):
        with pytest.raises(ValueError, match=r"target must have the shape .*\(6,\); got target.shape=\(5,\)"):
            fn(Z, Y[:5])
        with pytest.raises(ValueError, match=r"target.shape=\(6, 1\)"):
            fn(Z, Y[:, None])


@pytest.mark.parametrize("loss, grad", CLASS_LOSSES)
def test_float_labels_are_rejected(loss, grad):
    with pytest.raises(ValueError, match="integer dtype; got float64"):
        loss(Z, Y.astype(float))


def test_probability_target_shape_mismatch():
    t = ce.softmax(RNG.normal(size=(6, 5)))
    with pytest.raises(
        ValueError, match=r"target must have the same shape as logits; got target.shape=\(6, 5\)"
    ):
        ce.cross_entropy(Z, t)


@pytest.mark.parametrize("loss, grad", CLASS_LOSSES)
def test_empty_class_axis(loss, grad):
    for fn in (loss, grad):
        with pytest.raises(ValueError, match=r"empty class axis .*shape \(3, 0\)"):
            fn(np.zeros((3, 0)), np.zeros(3, dtype=int))


@pytest.mark.parametrize("loss, grad", ALL)
def test_unknown_reduction(loss, grad):
    x, t = _args(loss)
    for fn in (loss, grad):
        with pytest.raises(ValueError, match=r"reduction must be one of .*; got 'average'"):
            fn(x, t, reduction="average")


@pytest.mark.parametrize("eps", [-0.1, 1.5, np.nan])
def test_label_smoothing_outside_unit_interval(eps):
    for fn in (ce.cross_entropy, ce.cross_entropy_grad):
        with pytest.raises(ValueError, match="label_smoothing must be in"):
            fn(Z, Y, label_smoothing=eps)


@pytest.mark.parametrize(
    "fn", [ce.cross_entropy, ce.cross_entropy_grad, ce.multi_margin_loss, ce.multi_margin_loss_grad]
)
def test_weight_of_the_wrong_length(fn):
    with pytest.raises(ValueError, match=r"one entry per class \(4\); got weight.shape=\(3,\)"):
        fn(Z, Y, weight=np.ones(3))


@pytest.mark.parametrize("fn", [ce.binary_cross_entropy, ce.binary_cross_entropy_grad])
@pytest.mark.parametrize("bad", [1.5, -0.2, np.nan])
def test_bce_probabilities_outside_unit_interval(fn, bad):
    p = PROBS.copy()
    p[0, 0] = bad
    with pytest.raises(ValueError, match=r"probs must be probabilities in \[0, 1\]"):
        fn(p, BIN_T)
    t = BIN_T.copy()
    t[1, 1] = bad
    with pytest.raises(ValueError, match=r"target must be probabilities in \[0, 1\]"):
        fn(PROBS, t)


@pytest.mark.parametrize("loss, grad", ELEMENTWISE_LOSSES)
def test_elementwise_shape_mismatch(loss, grad):
    for fn in (loss, grad):
        with pytest.raises(ValueError, match=r"target must have the same shape as .*\(5, 1\)"):
            fn(PROBS, BIN_T[:, :1])


@pytest.mark.parametrize(
    "fn",
    [
        ce.binary_cross_entropy,
        ce.binary_cross_entropy_grad,
        ce.binary_cross_entropy_with_logits,
        ce.binary_cross_entropy_with_logits_grad,
    ],
)
def test_bce_weight_that_does_not_broadcast(fn):
    with pytest.raises(ValueError, match=r"weight of shape \(2,\) cannot be broadcast .*\(5, 3\)"):
        fn(PROBS, BIN_T, weight=np.ones(2))
    with pytest.raises(ValueError, match=r"weight of shape \(2, 5, 3\) cannot be broadcast"):
        fn(PROBS, BIN_T, weight=np.ones((2, 5, 3)))


@pytest.mark.parametrize(
    "fn", [ce.binary_cross_entropy_with_logits, ce.binary_cross_entropy_with_logits_grad]
)
def test_pos_weight_that_does_not_broadcast(fn):
    with pytest.raises(ValueError, match=r"pos_weight of shape \(4,\) cannot be broadcast"):
        fn(PROBS, BIN_T, pos_weight=np.ones(4))


@pytest.mark.parametrize("fn", [ce.multi_margin_loss, ce.multi_margin_loss_grad])
def test_multi_margin_p_must_be_1_or_2(fn):
    with pytest.raises(ValueError, match="p must be 1 or 2; got 3"):
        fn(Z, Y, p=3)


@pytest.mark.parametrize("fn", [ce.hinge_loss, ce.lse_hinge_loss_grad, ce.multi_margin_loss])
def test_margin_must_be_finite(fn):
    with pytest.raises(ValueError, match="margin must be a finite number"):
        fn(Z, Y, margin=np.inf)


@pytest.mark.parametrize("loss, grad", CLASS_LOSSES)
def test_axis_out_of_range(loss, grad):
    with pytest.raises(ValueError, match=r"axis=2 is out of bounds for an array with 2 dimension"):
        loss(Z, Y, axis=2)


def test_complex_or_string_logits_are_rejected():
    with pytest.raises(ValueError, match="logits must be a real-valued array; got dtype complex128"):
        ce.cross_entropy(Z + 1j, Y)
    with pytest.raises(ValueError, match="pred must be a real-valued array"):
        ce.mse_loss(np.array(["a"]), np.array([1.0]))
