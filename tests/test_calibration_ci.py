"""Equal-mass bins and the bootstrap interval of the expected calibration error."""

import numpy as np
import pytest

import ce_lib as ce


def _binary(conf, correct):
    """Two-class probabilities with confidence ``conf``; label 0 where ``correct`` else 1."""
    conf = np.asarray(conf, dtype=float)
    return np.stack([conf, 1 - conf], axis=1), np.where(correct, 0, 1)


def test_equal_width_is_still_the_default():
    rng = np.random.default_rng(0)
    probs = ce.softmax(rng.normal(scale=2, size=(500, 5)))
    labels = rng.integers(0, 5, size=500)
    a = ce.calibration_bins(probs, labels)
    b = ce.calibration_bins(probs, labels, binning="equal_width")
    np.testing.assert_array_equal(a.count, b.count)
    np.testing.assert_array_equal(a.edges, np.linspace(0, 1, 16))
    assert a.binning == "equal_width"
    assert ce.expected_calibration_error(probs, labels) == ce.expected_calibration_error(
        probs, labels, binning="equal_width"
    )


@pytest.mark.parametrize("n, n_bins", [(100, 10), (101, 10), (809, 15), (7, 3), (1000, 1)])
def test_equal_mass_counts_differ_by_at_most_one(n, n_bins):
    rng = np.random.default_rng(n)
    probs = ce.softmax(rng.normal(scale=3, size=(n, 4)))  # continuous: no ties
    labels = rng.integers(0, 4, size=n)
    bins = ce.calibration_bins(probs, labels, n_bins=n_bins, binning="equal_mass")
    assert bins.count.sum() == n and bins.count.max() - bins.count.min() <= 1
    assert bins.binning == "equal_mass"
    # bins are ordered by confidence and the edges bracket their members
    conf = probs.max(axis=1)
    assert np.all(np.diff(bins.confidence) > 0)
    assert bins.edges[0] == 0 and bins.edges[-1] == 1 and np.all(np.diff(bins.edges) >= 0)
    if n_bins > 1:
        assert bins.edges[1] == np.sort(conf)[bins.count[0] - 1]


def test_equal_mass_by_hand():
    # confidences .6 .7 .8 .9, correct: no yes no yes; two bins of two
    probs, labels = _binary([0.9, 0.6, 0.8, 0.7], [True, False, False, True])
    bins = ce.calibration_bins(probs, labels, n_bins=2, binning="equal_mass")
    np.testing.assert_array_equal(bins.count, [2, 2])
    np.testing.assert_allclose(bins.confidence, [0.65, 0.85])
    np.testing.assert_allclose(bins.accuracy, [0.5, 0.5])
    np.testing.assert_allclose(bins.edges, [0.0, 0.7, 1.0])
    ece = ce.expected_calibration_error(probs, labels, n_bins=2, binning="equal_mass")
    assert ece == pytest.approx(0.5 * 0.15 + 0.5 * 0.35)
    # one bin: |mean correct - mean confidence|; N bins: mean |correct - confidence|
    assert ce.expected_calibration_error(probs, labels, n_bins=1, binning="equal_mass") == pytest.approx(0.25)
    per_example = (0.1 + 0.6 + 0.8 + 0.3) / 4
    assert ce.expected_calibration_error(probs, labels, n_bins=4, binning="equal_mass") == pytest.approx(
        per_example
    )


def test_equal_mass_ties_share_a_bin_and_too_many_bins():
    # five examples, three tied at 0.7: a cut never separates them
    probs, labels = _binary([0.6, 0.7, 0.7, 0.7, 0.9], [True, True, False, True, True])
    bins = ce.calibration_bins(probs, labels, n_bins=2, binning="equal_mass")
    np.testing.assert_array_equal(bins.count, [4, 1])
    # the result does not depend on the order of the examples
    perm = np.array([3, 0, 4, 2, 1])
    again = ce.calibration_bins(probs[perm], labels[perm], n_bins=2, binning="equal_mass")
    np.testing.assert_array_equal(again.count, bins.count)
    np.testing.assert_allclose(again.accuracy, bins.accuracy)
    # more bins than examples: one bin per distinct confidence, the rest empty
    many = ce.calibration_bins(probs, labels, n_bins=8, binning="equal_mass")
    assert many.count.sum() == 5 and np.sum(many.count > 0) == 3
    assert np.all(np.isnan(many.confidence[many.count == 0]))
    distinct = ce.calibration_bins(probs[[0, 1, 4]], labels[[0, 1, 4]], n_bins=8, binning="equal_mass")
    np.testing.assert_array_equal(distinct.count, [1, 1, 1, 0, 0, 0, 0, 0])


def test_bad_inputs_raise_clear_errors():
    probs, labels = _binary([0.6, 0.9], [True, False])
    with pytest.raises(ValueError, match="binning must be one of"):
        ce.calibration_bins(probs, labels, binning="quantile")
    with pytest.raises(ValueError, match="binning must be one of"):
        ce.expected_calibration_error(probs, labels, binning=None)
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        ce.calibration_bins(probs, labels, n_bins=0, binning="equal_mass")
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        ce.ece_bootstrap(probs, labels, n_bins=2.5)
    with pytest.raises(ValueError, match="n_boot must be a positive integer"):
        ce.ece_bootstrap(probs, labels, n_boot=0)
    for level in (0.0, 1.0, 95, "0.9"):
        with pytest.raises(ValueError, match="level must be in"):
            ce.ece_bootstrap(probs, labels, level=level)
    with pytest.raises(ValueError, match="no examples"):
        ce.ece_bootstrap(np.empty((0, 2)), np.empty(0, int))
    with pytest.raises(ValueError, match="probs must be probabilities"):
        ce.ece_bootstrap(np.array([[1.5, -0.5]]), np.array([0]))
    with pytest.raises(ValueError):
        ce.ece_bootstrap(probs, np.array([0, 5]))  # label out of range


@pytest.mark.parametrize("binning", ["equal_width", "equal_mass"])
def test_bootstrap_replicates_are_ece_of_resamples(binning):
    rng = np.random.default_rng(1)
    probs = ce.softmax(rng.normal(scale=2, size=(60, 3)))
    probs[:10] = probs[10:20]  # some ties
    labels = rng.integers(0, 3, size=60)
    res = ce.ece_bootstrap(probs, labels, n_bins=5, binning=binning, n_boot=20, seed=7, level=0.8)
    assert res.estimate == ce.expected_calibration_error(probs, labels, n_bins=5, binning=binning)
    # redo the draws by hand: positions in the order of increasing confidence
    order = np.argsort(probs.max(axis=1), kind="stable")
    pos = np.sort(np.random.default_rng(7).integers(0, 60, size=(20, 60)), axis=1)
    direct = [ce.expected_calibration_error(probs[order[r]], labels[order[r]], n_bins=5, binning=binning)
              for r in pos]
    np.testing.assert_allclose(res.replicates, direct, rtol=0, atol=1e-12)
    assert res.low == pytest.approx(np.quantile(direct, 0.1))
    assert res.high == pytest.approx(np.quantile(direct, 0.9))
    assert res.low <= res.high and res.level == 0.8
    # seeded: the same seed gives the same interval
    again = ce.ece_bootstrap(probs, labels, n_bins=5, binning=binning, n_boot=20, seed=7, level=0.8)
    np.testing.assert_array_equal(again.replicates, res.replicates)


@pytest.mark.parametrize("binning", ["equal_width", "equal_mass"])
def test_bootstrap_interval_coverage(binning):
    """Over repeated data sets, the 90 % interval covers the true ECE about 90 % of the time.

    The model is over-confident by a constant: P(correct | confidence c) = c - 0.1,
    so every bin's true gap is 0.1 and the true ECE is 0.1 for any binning.
    """
    rng = np.random.default_rng(2024)
    n, reps, delta = 1000, 200, 0.1
    covered = 0
    for _ in range(reps):
        conf = rng.uniform(0.6, 1.0, size=n)
        probs, labels = _binary(conf, rng.random(n) < conf - delta)
        res = ce.ece_bootstrap(probs, labels, n_bins=10, binning=binning, n_boot=200, level=0.9, seed=rng)
        covered += res.low <= delta <= res.high
    assert 0.8 <= covered / reps <= 0.97


def test_calibrated_model_has_positive_binned_ece():
    """The bias the docstring warns about: true ECE 0, binned ECE and its interval above 0."""
    rng = np.random.default_rng(5)
    conf = rng.uniform(0.5, 1.0, size=500)
    probs, labels = _binary(conf, rng.random(500) < conf)
    res = ce.ece_bootstrap(probs, labels, n_bins=15, n_boot=300, seed=0)
    assert res.low > 0 and res.estimate > 0.01
