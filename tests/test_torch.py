"""Conformance with torch.nn.functional: values and gradients, float32 and float64.

Runs when ``torch`` is importable (CI installs the CPU build); the default test
command does not need it. Under ``CI=true`` a missing torch is a failure, so
that CI can never pass without having checked conformance.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import ce_lib as ce

if os.environ.get("CI") == "true":
    import torch  # CI must have it: let the import fail loudly
torch = pytest.importorskip("torch", reason="PyTorch not installed: pip install torch==2.13.0")
F = torch.nn.functional

pytestmark = pytest.mark.torch
TOL = {np.float32: dict(rtol=2e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}
DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


def torch_value_and_grad(fn, x, *args, **kwargs):
    """Value of a torch loss and the gradient of its sum with respect to x."""
    xt = torch.tensor(x, requires_grad=True)
    out = fn(xt, *args, **kwargs)
    out.sum().backward()
    return out.detach().numpy(), xt.grad.numpy()


def assert_matches(ours, ours_grad, theirs, theirs_grad, dtype):
    assert np.asarray(ours).dtype == dtype and ours_grad.dtype == dtype
    np.testing.assert_allclose(ours, theirs, **TOL[dtype])
    np.testing.assert_allclose(ours_grad, theirs_grad, **TOL[dtype])


def tensor(a):
    return None if a is None else torch.tensor(a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("shape", [(7, 5), (3, 5, 4, 2), (5,)])
def test_cross_entropy_class_indices(dtype, reduction, weighted, smoothing, shape):
    rng = np.random.default_rng(0)
    z = rng.normal(scale=3, size=shape).astype(dtype)
    n_classes = 5
    axis = 0 if len(shape) == 1 else 1  # PyTorch's layout
    y = rng.integers(0, n_classes, size=shape[:axis] + shape[axis + 1 :])
    if y.ndim:
        y.flat[1] = -100  # ignored
    w = rng.uniform(0.5, 2, size=n_classes).astype(dtype) if weighted else None
    opts = dict(reduction=reduction, label_smoothing=smoothing)
    theirs, theirs_grad = torch_value_and_grad(F.cross_entropy, z, torch.tensor(y), weight=tensor(w), **opts)
    ours = ce.cross_entropy(z, y, axis=axis, weight=w, **opts)
    ours_grad = ce.cross_entropy_grad(z, y, axis=axis, weight=w, **opts)
    assert_matches(ours, ours_grad, theirs, theirs_grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_probability_targets(dtype, reduction, weighted, smoothing):
    rng = np.random.default_rng(1)
    z = rng.normal(scale=3, size=(4, 6, 3)).astype(dtype)
    t = ce.softmax(rng.normal(size=(4, 6, 3)), axis=1).astype(dtype)
    w = rng.uniform(0.5, 2, size=6).astype(dtype) if weighted else None
    opts = dict(reduction=reduction, label_smoothing=smoothing)
    theirs, theirs_grad = torch_value_and_grad(F.cross_entropy, z, torch.tensor(t), weight=tensor(w), **opts)
    ours = ce.cross_entropy(z, t, axis=1, weight=w, **opts)
    ours_grad = ce.cross_entropy_grad(z, t, axis=1, weight=w, **opts)
    assert_matches(ours, ours_grad, theirs, theirs_grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_edge_cases(dtype):
    big = 1e4 if dtype == np.float64 else 1e8
    z = np.array(
        [[big, -big, 0.0], [big, big, big], [2.0, -np.inf, 0.5], [-big, big, 0.0]],
        dtype=dtype,
    )
    y = np.array([0, 1, 0, 0])
    theirs, theirs_grad = torch_value_and_grad(F.cross_entropy, z, torch.tensor(y), reduction="none")
    ours = ce.cross_entropy(z, y, reduction="none")
    ours_grad = ce.cross_entropy_grad(z, y, reduction="none")
    assert np.all(np.isfinite(ours)) and np.all(np.isfinite(ours_grad))
    assert_matches(ours, ours_grad, theirs, theirs_grad, dtype)


def test_cross_entropy_all_ignored_mean_is_nan_in_both():
    z = np.zeros((2, 3))
    y = np.array([-100, -100])
    theirs = F.cross_entropy(torch.tensor(z), torch.tensor(y)).item()
    assert np.isnan(theirs) and np.isnan(ce.cross_entropy(z, y))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy(dtype, reduction, weighted):
    rng = np.random.default_rng(2)
    a = rng.uniform(0.01, 0.99, size=(6, 3)).astype(dtype)
    a[0, :] = [0.0, 1.0, 0.5]  # the clamp at log = -100
    t = rng.random((6, 3)).astype(dtype)
    t[0, :2] = [1.0, 0.0]
    w = rng.uniform(0.5, 2, size=3).astype(dtype) if weighted else None
    theirs, theirs_grad = torch_value_and_grad(
        F.binary_cross_entropy, a, torch.tensor(t), weight=tensor(w), reduction=reduction
    )
    ours = ce.binary_cross_entropy(a, t, weight=w, reduction=reduction)
    ours_grad = ce.binary_cross_entropy_grad(a, t, weight=w, reduction=reduction)
    assert_matches(ours, ours_grad, theirs, theirs_grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pos_weighted", [False, True])
def test_binary_cross_entropy_with_logits(dtype, reduction, weighted, pos_weighted):
    rng = np.random.default_rng(3)
    z = rng.normal(scale=4, size=(5, 4)).astype(dtype)
    z[0] = [1000.0, -1000.0, 1000.0, -1000.0]
    t = rng.random((5, 4)).astype(dtype)
    t[0] = [1.0, 0.0, 0.0, 1.0]
    w = rng.uniform(0.5, 2, size=(5, 1)).astype(dtype) if weighted else None
    pw = rng.uniform(0.5, 3, size=4).astype(dtype) if pos_weighted else None
    opts = dict(weight=w, pos_weight=pw, reduction=reduction)
    theirs, theirs_grad = torch_value_and_grad(
        F.binary_cross_entropy_with_logits,
        z,
        torch.tensor(t),
        weight=tensor(w),
        pos_weight=tensor(pw),
        reduction=reduction,
    )
    ours = ce.binary_cross_entropy_with_logits(z, t, **opts)
    ours_grad = ce.binary_cross_entropy_with_logits_grad(z, t, **opts)
    assert_matches(ours, ours_grad, theirs, theirs_grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss(dtype, reduction):
    rng = np.random.default_rng(4)
    a, t = rng.normal(size=(2, 3, 4)).astype(dtype)
    theirs, theirs_grad = torch_value_and_grad(F.mse_loss, a, torch.tensor(t), reduction=reduction)
    assert_matches(
        ce.mse_loss(a, t, reduction=reduction),
        ce.mse_loss_grad(a, t, reduction=reduction),
        theirs,
        theirs_grad,
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("margin", [1.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_multi_margin_loss(dtype, reduction, p, margin, weighted):
    rng = np.random.default_rng(5)
    z = rng.normal(size=(6, 5)).astype(dtype)
    y = rng.integers(0, 5, size=6)
    w = rng.uniform(0.5, 2, size=5).astype(dtype) if weighted else None
    opts = dict(p=p, margin=margin, weight=w, reduction=reduction)
    theirs, theirs_grad = torch_value_and_grad(
        F.multi_margin_loss, z, torch.tensor(y), p=p, margin=margin, weight=tensor(w), reduction=reduction
    )
    assert_matches(
        ce.multi_margin_loss(z, y, **opts),
        ce.multi_margin_loss_grad(z, y, **opts),
        theirs,
        theirs_grad,
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_family(dtype, axis):
    rng = np.random.default_rng(6)
    x = rng.normal(scale=20, size=(4, 5, 3)).astype(dtype)
    x[0, 0, 0] = -np.inf
    tx = torch.tensor(x)
    tol = TOL[dtype]
    np.testing.assert_allclose(ce.softmax(x, axis=axis), torch.softmax(tx, dim=axis).numpy(), **tol)
    np.testing.assert_allclose(ce.log_softmax(x, axis=axis), torch.log_softmax(tx, dim=axis).numpy(), **tol)
    np.testing.assert_allclose(ce.logsumexp(x, axis=axis), torch.logsumexp(tx, dim=axis).numpy(), **tol)
    y = rng.normal(scale=30, size=(3, 7)).astype(dtype)
    ty = torch.tensor(y)
    np.testing.assert_allclose(ce.sigmoid(y), torch.sigmoid(ty).numpy(), **tol)
    np.testing.assert_allclose(ce.log_sigmoid(y), F.logsigmoid(ty).numpy(), **tol)
    np.testing.assert_allclose(ce.softplus(y), F.softplus(ty, threshold=1e9).numpy(), **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_jacobian_matches_autograd(dtype):
    z = np.random.default_rng(7).normal(size=6).astype(dtype)
    theirs = torch.autograd.functional.jacobian(lambda v: torch.softmax(v, 0), torch.tensor(z)).numpy()
    np.testing.assert_allclose(ce.softmax_jacobian(z), theirs, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_hinge_chain_against_autograd(dtype, margin):
    """PyTorch has no such losses; build them from torch primitives and compare."""
    rng = np.random.default_rng(8)
    z = rng.normal(size=(6, 4)).astype(dtype)
    y = rng.integers(0, 4, size=6)
    mask = torch.tensor(np.arange(4) == y[:, None])

    def torch_hinge(v, smooth):
        others = v.masked_fill(mask, -torch.inf)
        top = torch.logsumexp(others, 1) if smooth else others.max(1).values
        return torch.relu(top - v[torch.arange(6), torch.tensor(y)] + margin)

    for smooth, loss, grad in [
        (False, ce.hinge_loss, ce.hinge_loss_grad),
        (True, ce.lse_hinge_loss, ce.lse_hinge_loss_grad),
    ]:
        theirs, theirs_grad = torch_value_and_grad(lambda v, s=smooth: torch_hinge(v, s), z)
        assert_matches(
            loss(z, y, margin=margin, reduction="none"),
            grad(z, y, margin=margin, reduction="none"),
            theirs,
            theirs_grad,
            dtype,
        )
