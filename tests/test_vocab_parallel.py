"""Vocabulary-parallel cross-entropy (ce_lib.parallel) against the single-array computation."""

from __future__ import annotations

import numpy as np
import pytest

import ce_lib as ce
from ce_lib.parallel import vocab_parallel_cross_entropy


def _split(z, widths):
    return np.split(z, np.cumsum(widths)[:-1], axis=1)


@pytest.mark.parametrize(
    "widths",
    [[50], [25, 25], [10, 10, 10, 10, 10], [1, 49], [0, 20, 0, 30], [7, 13, 30], [50, 0]],
)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_matches_cross_entropy(widths, reduction):
    rng = np.random.default_rng(sum(widths) + len(widths))
    z = rng.normal(scale=4.0, size=(40, 50))
    y = rng.integers(0, 50, size=40)
    y[3] = -100
    loss, grads, comm = vocab_parallel_cross_entropy(_split(z, widths), y, reduction=reduction)
    ref = ce.cross_entropy(z, y, reduction=reduction)
    ref_grad = ce.cross_entropy_grad(z, y, reduction="sum" if reduction == "none" else reduction)
    np.testing.assert_allclose(loss, ref, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(np.concatenate(grads, axis=1), ref_grad, rtol=1e-12, atol=1e-15)
    assert [g.shape for g in grads] == [(40, w) for w in widths]
    assert comm == 3 * 40


def test_shard_without_any_target_and_large_logits():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(16, 30)) * 300.0  # exp(z) without the shift would overflow
    y = rng.integers(0, 10, size=16)  # every target in the first shard
    loss, grads, _ = vocab_parallel_cross_entropy(_split(z, [10, 10, 10]), y)
    np.testing.assert_allclose(loss, ce.cross_entropy(z, y, reduction="none"), rtol=1e-12)
    np.testing.assert_allclose(
        np.concatenate(grads, axis=1), ce.cross_entropy_grad(z, y, reduction="sum"), rtol=1e-12, atol=1e-300
    )
    # the shards that hold no target have a gradient that is just the softmax: non-negative
    assert all((g >= 0).all() for g in grads[1:])


def test_masked_logits_and_float32():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(8, 12)).astype(np.float32)
    z[:, 5] = -np.inf
    y = np.array([0, 1, 2, 3, 4, 6, 11, 7])
    loss, grads, _ = vocab_parallel_cross_entropy(_split(z, [5, 7]), y)
    assert loss.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    np.testing.assert_allclose(loss, ce.cross_entropy(z, y, reduction="none"), rtol=2e-6)


def test_all_ignored_mean_is_nan():
    z = np.zeros((3, 4))
    out = vocab_parallel_cross_entropy([z[:, :2], z[:, 2:]], np.full(3, -100), reduction="mean")
    assert np.isnan(out.loss)


@pytest.mark.parametrize(
    "shards, target, message",
    [
        ([], [0], "non-empty list"),
        (np.zeros((2, 3)), [0, 0], "non-empty list"),
        ([np.zeros(3)], [0], "2-D"),
        ([np.zeros((2, 3)), np.zeros((3, 3))], [0, 0], "same number of rows"),
        ([np.zeros((2, 0))], [0, 0], "no classes"),
        ([np.zeros((2, 3)), np.zeros((2, 2))], [0, 5], "outside"),
        ([np.zeros((2, 3))], [0.0, 1.0], "integer dtype"),
    ],
)
def test_errors(shards, target, message):
    with pytest.raises(ValueError, match=message):
        vocab_parallel_cross_entropy(shards, np.asarray(target))


def test_bad_reduction():
    with pytest.raises(ValueError, match="reduction"):
        vocab_parallel_cross_entropy([np.zeros((1, 2))], np.array([0]), reduction="avg")


def test_confident_row_keeps_its_tiny_loss():
    z = np.array([[40.0, 0.0, 0.0, -3.0]])
    loss, grads, _ = vocab_parallel_cross_entropy([z[:, :1], z[:, 1:]], np.array([0]))
    exact = np.log1p(2 * np.exp(-40.0) + np.exp(-43.0))
    assert abs(loss[0] - exact) < 1e-15 * exact
    assert grads[0][0, 0] == pytest.approx(-(2 * np.exp(-40.0) + np.exp(-43.0)), rel=1e-14)


@pytest.mark.parametrize("n", [1, 7, 40])
@pytest.mark.parametrize("widths", [[3], [100], [30, 0, 70], [1] * 12])
def test_numbers_all_reduced_is_counted_and_is_3n(n, widths):
    # the count is the sum of the sizes of the arrays the function all-reduces:
    # three arrays of N numbers per rank, whatever the vocabulary and the number of ranks
    z = np.random.default_rng(n).normal(size=(n, sum(widths)))
    y = np.arange(n) % sum(widths)
    assert vocab_parallel_cross_entropy(_split(z, widths), y).numbers_all_reduced == 3 * n
