"""ArcFace's target logit and its derivative, computed through the angle.

The target logit is s*cos(theta + m) with theta = arccos(c). Its derivative with respect to the
cosine, sin(theta + m)/sin(theta), is finite for every float cosine below 1 and grows like
sin(m)/theta; an earlier version clipped c to 1 - 1e-7 and returned 0 there (theta < 4.5e-4 rad),
dropping the pull of the target on the feature. These tests compare with an mpmath reference
and with the loss written directly as a function of the angle, for both ``easy_margin`` options.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest

import ce_lib as ce
from ce_lib.margins import _arc_target

M = 0.5
S = 4.0
OTHER = float(np.cos(1.0))  # the cosine of the one competing class


def _on_arc(c: float, m: float, easy: bool) -> bool:
    return c > 0 if easy else c > float(np.cos(np.pi - m))


def _ref_target(c: float, m: float, easy: bool) -> tuple[mp.mpf, mp.mpf]:
    """phi(c) and phi'(c) in 50-digit arithmetic, for the float64 cosine c exactly."""
    with mp.workdps(50):
        cc, mm = mp.mpf(c), mp.mpf(m)
        if not _on_arc(c, m, easy):
            return (cc if easy else cc - mm * mp.sin(mm)), mp.mpf(1)
        theta = mp.acos(cc)
        return mp.cos(theta + mm), mp.sin(theta + mm) / mp.sin(theta)


ANGLES = [
    1e-7,
    1e-6,
    1e-4,
    4e-4,
    1e-2,
    0.3,
    1.0,
    np.pi / 2 - 1e-3,
    np.pi / 2 + 1e-3,
    np.pi - M - 1e-3,
    np.pi - M + 1e-3,
    3.0,
]


@pytest.mark.parametrize("easy", [False, True])
@pytest.mark.parametrize("theta", ANGLES)
def test_target_and_derivative_match_mpmath(theta, easy):
    c = float(np.cos(theta))
    phi, dphi = _arc_target(np.array([c]), M, easy)
    ref_phi, ref_dphi = _ref_target(c, M, easy)
    assert abs(phi[0] - float(ref_phi)) <= 1e-15 * max(1.0, abs(float(ref_phi)))
    # relative to |phi'| + 1: phi' vanishes at theta = pi - m, where only absolute accuracy is possible
    assert abs(dphi[0] - float(ref_dphi)) <= 1e-13 * (abs(float(ref_dphi)) + 1.0)


@pytest.mark.parametrize("easy", [False, True])
@pytest.mark.parametrize("theta", [1e-6, 1e-4, 0.7, np.pi - M - 0.05, np.pi - M + 0.05])
def test_public_loss_and_grad_match_mpmath(theta, easy):
    c = float(np.cos(theta))
    cos = np.array([[c, OTHER], [OTHER, c]])
    y = np.array([0, 1])
    loss = ce.arcface_loss(cos, y, s=S, m=M, easy_margin=easy, reduction="none")
    grad = ce.arcface_loss_grad(cos, y, s=S, m=M, easy_margin=easy, reduction="none")
    phi, dphi = _ref_target(c, M, easy)
    with mp.workdps(50):
        zt, zo = S * phi, S * mp.mpf(OTHER)
        ref_loss = mp.log(1 + mp.exp(zo - zt))
        p_other = 1 / (1 + mp.exp(zt - zo))
        ref_gt, ref_go = -S * p_other * dphi, S * p_other
    for k in range(2):  # the same example, with the classes swapped
        assert abs(loss[k] - float(ref_loss)) <= 1e-14 * float(ref_loss)
        assert abs(grad[k, k] - float(ref_gt)) <= 1e-13 * abs(float(ref_gt))
        assert abs(grad[k, 1 - k] - float(ref_go)) <= 1e-13 * abs(float(ref_go))


def _loss_of_angle(t, easy):
    """The ArcFace loss written directly as a function of the target angle (no cosine round trip)."""
    t = np.asarray(t, dtype=float)
    c = np.cos(t)
    arc = c > 0 if easy else t < np.pi - M
    target = np.where(arc, np.cos(t + M), c if easy else c - M * np.sin(M))
    return float(np.sum(np.logaddexp(0.0, S * (OTHER - target))))


@pytest.mark.parametrize("easy", [False, True])
@pytest.mark.parametrize(
    "theta", [1e-6, 1e-4, 0.05, 0.7, 1.4, np.pi / 2 + 0.05, np.pi - M - 0.01, np.pi - M + 0.01, 3.0]
)
def test_gradcheck_through_the_angle(theta, easy):
    # the point is the angle a float64 cosine represents, so both sides see the same angle
    c = np.array([np.cos(theta)])
    t = np.arccos(c)
    cos = np.stack([c, np.full_like(c, OTHER)], axis=-1)
    g_cos = ce.arcface_loss_grad(cos, [0], s=S, m=M, easy_margin=easy, reduction="sum")[:, 0]
    analytic = g_cos * -np.sqrt((1 - c) * (1 + c))  # d cos(theta) / d theta = -sin(theta)
    eps = min(1e-6, theta / 10)  # never crosses theta = 0, pi/2 or pi - m
    check = ce.gradcheck(lambda tt: _loss_of_angle(tt, easy), t, analytic, eps=eps, tolerance=1e-7)
    assert check.passed, str(check)
    # the target's pull is never dropped: near theta = 0 it is s (1 - p_y) sin(theta + m)
    if theta < 0.1:
        assert abs(analytic[0]) > 0.1 * S * np.sin(M) * (1 - 1 / (1 + np.exp(S * (OTHER - np.cos(M)))))


@pytest.mark.parametrize("easy", [False, True])
@pytest.mark.parametrize("theta", [1e-4, 1e-2, 1.0])
def test_feature_gradient_finite_and_correct_near_the_weight(theta, easy):
    W = np.array([[1.0, 0.0, 0.0], [0.5, np.sqrt(0.75), 0.0], [-0.6, -0.8, 0.0]])
    h = np.array([[np.cos(theta), 0.0, np.sin(theta)]])

    def loss(hh):
        return ce.arcface_loss(ce.cosine_logits(hh, W), [0], s=S, m=M, easy_margin=easy)

    g_cos = ce.arcface_loss_grad(ce.cosine_logits(h, W), [0], s=S, m=M, easy_margin=easy)
    g_h, _ = ce.cosine_logits_grad(h, W, g_cos)
    check = ce.gradcheck(loss, h, g_h, eps=min(1e-6, theta / 100), tolerance=1e-5)
    assert check.passed, str(check)


def test_cosine_exactly_one_is_finite():
    cos = np.array([[1.0, 0.2, -0.3], [1.0 + 1e-7, 0.2, -0.3]])
    g = ce.arcface_loss_grad(cos, [0, 0], s=64.0, m=M)
    assert np.all(np.isfinite(g))
    # the stand-in is phi' at the largest float64 cosine below 1, the largest finite value phi' takes
    below = np.nextafter(1.0, 0.0)
    _, d_one = _arc_target(np.array([1.0]), M)
    _, d_below = _arc_target(np.array([below]), M)
    assert d_one[0] == d_below[0] and d_below[0] > 1e7
    # and the feature gradient at h = w_y is finite (the projection is zero there)
    W = np.eye(3)
    g_h, g_w = ce.cosine_logits_grad(W[:1], W, ce.arcface_loss_grad(ce.cosine_logits(W[:1], W), [0], m=M))
    assert np.all(np.isfinite(g_h)) and np.all(np.isfinite(g_w))


@pytest.mark.parametrize("m", [0.2, 0.5, 0.8])
def test_fallbacks_follow_the_reference_code(m):
    """Reference (insightface arcface_torch): th = cos(pi - m), mm = sin(pi - m) * m."""
    c = np.linspace(-1.0, 1.0, 4001)
    th, mm = np.cos(np.pi - m), np.sin(np.pi - m) * m
    cos_tm = c * np.cos(m) - np.sqrt(1 - c**2) * np.sin(m)
    hard, _ = _arc_target(c, m, easy_margin=False)
    easy, _ = _arc_target(c, m, easy_margin=True)
    assert np.abs(hard - np.where(c > th, cos_tm, c - mm)).max() < 1e-12
    assert np.abs(easy - np.where(c > 0, cos_tm, c)).max() < 1e-12
    # the default is monotone (non-decreasing in c); easy_margin jumps up by sin m at c = 0
    assert np.all(np.diff(hard) >= 0)
    i = np.searchsorted(c, 0.0, side="right")  # first c > 0
    assert abs((easy[i - 1] - easy[i]) - np.sin(m)) < 2e-3
    assert np.any(np.diff(easy) < 0)


def test_m_zero_is_normface_for_both_options():
    rng = np.random.default_rng(0)
    cos = ce.cosine_logits(rng.normal(size=(50, 8)), rng.normal(size=(6, 8)))
    y = rng.integers(0, 6, size=50)
    for easy in (False, True):
        err = ce.relative_error(
            ce.arcface_loss(cos, y, s=20.0, m=0.0, easy_margin=easy, reduction="none"),
            ce.cross_entropy(20.0 * cos, y, reduction="none"),
        )
        assert err < 1e-14
        g = ce.arcface_loss_grad(cos, y, s=20.0, m=0.0, easy_margin=easy)
        assert ce.relative_error(g, 20.0 * ce.cross_entropy_grad(20.0 * cos, y)) < 1e-14
