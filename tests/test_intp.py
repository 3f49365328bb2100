"""ce_lib where ``np.intp`` is int32 (Pyodide/WebAssembly), simulated on a 64-bit machine.

NumPy indexes with ``np.intp``. Where that is int32, the functions that cast
their index argument with the "safe" rule refuse int64 (and uint32, uint64)
arrays: ``repeat`` and ``choose`` in every NumPy, ``bincount`` and ``take``
too in NumPy 2.0, the oldest supported. And ``astype(np.intp)`` wraps values
beyond 2**31 without a word. On this machine ``np.intp`` *is* int64, so
int64 labels handed straight to ``bincount`` would go unnoticed.

The fixture ``intp32`` therefore makes ``numpy.intp`` int32 while a test runs,
and replaces those four functions with strict ones that accept an integer
index array only if its dtype is exactly the (simulated) ``np.intp``. Every
public function that takes integer labels is then called with labels of
several integer dtypes, int64 included: ce_lib must convert them, through
``ce_lib._validation.as_index_array``, and give the same answer as on the
real 64-bit platform.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import ce_lib as ce
from ce_lib._validation import as_index_array, check_class_target

SIMULATED_INTP = np.int32
LABEL_DTYPES = [np.int64, np.int32, np.int16, np.uint8, np.uint64]

# The NumPy functions that cast their index argument "safely": (position, keyword) of that argument.
SAFE_CASTING_INDEX_ARGUMENT = {
    "bincount": (0, "x"),
    "take": (1, "indices"),
    "repeat": (1, "repeats"),
    "choose": (0, "a"),
}


def simulate_32_bit_intp(monkeypatch):
    """Make np.intp int32 and the safe-casting functions strict; returns the list of their calls, by name."""
    calls = []

    def strict(name, original, position, keyword):
        def wrapper(*args, **kwargs):
            index = np.asarray(args[position] if len(args) > position else kwargs[keyword])
            if index.dtype.kind in "iu" and index.dtype != SIMULATED_INTP:
                raise TypeError(
                    f"Cannot cast array data from {index.dtype} to {np.dtype(SIMULATED_INTP)} "
                    f"according to the rule 'safe' (simulated 32-bit np.{name})"
                )
            calls.append(name)
            return original(*args, **kwargs)

        return wrapper

    for name, (position, keyword) in SAFE_CASTING_INDEX_ARGUMENT.items():
        monkeypatch.setattr(np, name, strict(name, getattr(np, name), position, keyword))
    monkeypatch.setattr(np, "intp", SIMULATED_INTP)
    return calls


@pytest.fixture
def intp32(monkeypatch):
    return simulate_32_bit_intp(monkeypatch)


def test_the_simulation_refuses_int64_in_bincount(intp32):
    with pytest.raises(TypeError, match="rule 'safe'"):
        np.bincount(np.array([0, 1], dtype=np.int64))
    assert np.bincount(np.array([0, 1], dtype=np.int32)).tolist() == [1, 1]


# --------------------------------------------------------------------------
# Every public function that takes integer labels
# --------------------------------------------------------------------------

RNG = np.random.default_rng(0)
LABELS = np.array([0, 1, 2, 3, 0, 2])  # N = 6, C = 4
LOGITS = 2.0 * np.eye(4)[LABELS] + RNG.normal(size=(6, 4))
LOGITS[4] = [0.0, 0.0, 0.0, 3.0]  # a confident mistake, so that fit_temperature has an optimum
PROBS = ce.softmax(LOGITS)
COSINES = np.tanh(LOGITS / 3)
H, W = RNG.normal(size=(6, 3)), RNG.normal(size=(4, 3))

CALLS = {
    "cross_entropy": lambda y: ce.cross_entropy(LOGITS, y),
    "cross_entropy[ignore_index=2]": lambda y: ce.cross_entropy(LOGITS, y, ignore_index=2, reduction="none"),
    "cross_entropy[weight, smoothing]": lambda y: ce.cross_entropy(
        LOGITS, y, weight=[1.0, 2.0, 0.5, 1.0], label_smoothing=0.1
    ),
    "cross_entropy[axis=0]": lambda y: ce.cross_entropy(LOGITS.T, y, axis=0),
    "cross_entropy_grad": lambda y: ce.cross_entropy_grad(LOGITS, y),
    "cross_entropy_value_and_grad": lambda y: ce.cross_entropy_value_and_grad(LOGITS, y, reduction="sum"),
    "focal_loss": lambda y: ce.focal_loss(LOGITS, y, alpha=[0.25, 0.25, 0.25, 0.25]),
    "focal_loss_grad": lambda y: ce.focal_loss_grad(LOGITS, y),
    "hinge_loss": lambda y: ce.hinge_loss(LOGITS, y, margin=1.0),
    "hinge_loss_grad": lambda y: ce.hinge_loss_grad(LOGITS, y, margin=1.0),
    "lse_hinge_loss": lambda y: ce.lse_hinge_loss(LOGITS, y),
    "lse_hinge_loss_grad": lambda y: ce.lse_hinge_loss_grad(LOGITS, y),
    "multi_margin_loss": lambda y: ce.multi_margin_loss(LOGITS, y, p=2, weight=[1.0, 2.0, 0.5, 1.0]),
    "multi_margin_loss_grad": lambda y: ce.multi_margin_loss_grad(LOGITS, y),
    "am_softmax_loss": lambda y: ce.am_softmax_loss(COSINES, y),
    "am_softmax_loss_grad": lambda y: ce.am_softmax_loss_grad(COSINES, y),
    "arcface_loss": lambda y: ce.arcface_loss(COSINES, y),
    "arcface_loss_grad": lambda y: ce.arcface_loss_grad(COSINES, y),
    "sparsemax_loss": lambda y: ce.sparsemax_loss(LOGITS, y),
    "sparsemax_loss_grad": lambda y: ce.sparsemax_loss_grad(LOGITS, y),
    "linear_cross_entropy": lambda y: ce.linear_cross_entropy(H, W, y, chunk_size=4),
    "linear_cross_entropy_grad": lambda y: ce.linear_cross_entropy_grad(H, W, y, ignore_index=2),
    "linear_cross_entropy_value_and_grad": lambda y: ce.linear_cross_entropy_value_and_grad(H, W, y),
    "linear_cross_entropy_reference": lambda y: ce.linear_cross_entropy_reference(H, W, y),
    "calibration_bins": lambda y: ce.calibration_bins(PROBS, y, n_bins=5),
    "expected_calibration_error": lambda y: ce.expected_calibration_error(PROBS, y, n_bins=5),
    "fit_temperature": lambda y: ce.fit_temperature(LOGITS, y),
}
USES_BINCOUNT = {"calibration_bins", "expected_calibration_error"}


def arrays(result):
    """The arrays in a result: an array, a tuple of them (nested, with None), or a dataclass."""
    if result is None:
        return []
    if dataclasses.is_dataclass(result):
        return arrays(dataclasses.astuple(result))
    if isinstance(result, tuple):
        return [a for part in result for a in arrays(part)]
    return [np.asarray(result)]


@pytest.mark.parametrize("dtype", LABEL_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", CALLS)
def test_every_label_dtype_gives_the_64_bit_answer_on_a_32_bit_intp(name, dtype, monkeypatch):
    expected = arrays(CALLS[name](LABELS))  # on the real platform, int64 labels
    strict_calls = simulate_32_bit_intp(monkeypatch)
    got = arrays(CALLS[name](LABELS.astype(dtype)))
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)
    if name in USES_BINCOUNT:
        assert "bincount" in strict_calls  # the labels' bins did reach the strict bincount


# --------------------------------------------------------------------------
# The shared helper
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", LABEL_DTYPES, ids=lambda d: np.dtype(d).name)
def test_class_targets_come_back_as_intp(dtype, intp32):
    y = check_class_target(LABELS.astype(dtype), (6,), 4)
    assert y.dtype == SIMULATED_INTP
    np.testing.assert_array_equal(y, LABELS)


def test_an_index_that_does_not_fit_intp_is_refused_with_the_argument_named(intp32):
    too_big = r"counts contains 2147483648, which does not fit .*np\.intp \(int32"
    with pytest.raises(ValueError, match=too_big):
        as_index_array(np.array([0, 2**31]), "counts")
    assert as_index_array(np.array([0, 2**31 - 1, -(2**31)]), "counts").dtype == SIMULATED_INTP


def test_an_ignore_index_beyond_a_32_bit_intp_is_refused_not_wrapped(intp32):
    """int64 2**40 would wrap to class 0 in an int32 and be counted instead of ignored."""
    big = 2**40
    labels = np.array([1, big, 2, 0, 3, 1])
    refused = rf"target contains {big} \(= ignore_index\), which does not fit .*np\.intp \(int32"
    with pytest.raises(ValueError, match=refused):
        ce.cross_entropy(LOGITS, labels, ignore_index=big)
    with pytest.raises(ValueError, match=rf"target contains {big}"):
        ce.linear_cross_entropy(H, W, labels, ignore_index=big)
    assert np.isfinite(ce.cross_entropy(LOGITS, LABELS, ignore_index=big))  # unused: no harm


def test_an_ignore_index_beyond_int64_is_refused_not_wrapped():
    """The same on the real platform: uint64 2**63 would wrap to -2**63 in an int64."""
    big = 2**63
    labels = np.array([1, big, 2, 0, 3, 1], dtype=np.uint64)
    with pytest.raises(ValueError, match=rf"target contains {big} \(= ignore_index\), which does not fit"):
        ce.cross_entropy(LOGITS, labels, ignore_index=big)
    small = np.array([1, 2**40, 2, 0, 3, 1])  # fits an int64: ignored as asked
    np.testing.assert_allclose(
        ce.cross_entropy(LOGITS, small, ignore_index=2**40, reduction="sum"),
        ce.cross_entropy(np.delete(LOGITS, 1, axis=0), np.delete(small, 1), reduction="sum"),
    )


def test_calibration_names_its_labels_argument():
    with pytest.raises(ValueError, match=r"labels contains class index 7"):
        ce.expected_calibration_error(PROBS, np.array([0, 1, 2, 3, 7, 1]))
