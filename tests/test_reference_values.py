"""Published reference cases, ported to ``ce_lib``.

Three sources, one section each:

1. SciPy, ``scipy/special/tests/test_logsumexp.py`` (scipy/scipy @ 3dbf660a):
   the ``logsumexp``, ``softmax`` and ``log_softmax`` cases. Each test also
   runs ``scipy.special`` on the original (unadapted) input, so that the
   ported expected value is checked against the reference implementation too.
   ``ce_lib`` has no ``b=`` weights, no ``return_sign``, a single integer
   ``axis`` defaulting to -1 (SciPy: ``None``, or a tuple), no complex
   support and no 0-d inputs; the adaptations are noted case by case.
2. Optax, ``optax/losses/_classification_test.py`` (google-deepmind/optax @
   2edbcbe2): the cases with hard-coded inputs and expected values whose
   definitions map exactly onto a ``ce_lib`` function. Optax returns
   per-example losses, hence ``reduction="none"``.
3. PyTorch's documented formulas (``torch.nn.functional`` / ``torch.nn`` loss
   docs): small cases whose expected values are written out here with plain
   NumPy, independently of both ``ce_lib`` and ``torch``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy
import scipy.special as sc

import ce_lib as ce

RTOL = 1e-12  # float64 default for the hand-computed cases
_SCIPY_VERSION = tuple(int(part) for part in scipy.__version__.split(".")[:2])


def _scipy(fn, *args, **kwargs):
    """Call a ``scipy.special`` function without letting its warnings become errors.

    The project turns every RuntimeWarning into an error; SciPy's own tests
    filter the divide/invalid/overflow warnings of these functions, so do we.
    """
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


def _lse_last_axes(a, n):
    """Hand-flatten the last ``n`` axes so that ce_lib can reduce them (SciPy: ``axis=tuple``)."""
    a = np.asarray(a)
    return a.reshape((*a.shape[: a.ndim - n], -1))


# ==========================================================================
# 1. SciPy: scipy/special/tests/test_logsumexp.py
# ==========================================================================
#
# Left out (ce_lib has no such feature): every case using ``b=`` (test_logsumexp_b,
# test_logsumexp_b_zero, test_logsumexp_b_shape, test_dtypes_ab, test_gh22903) and
# ``return_sign=`` (test_logsumexp_sign, test_logsumexp_sign_zero,
# test_logsumexp_sign_shape, test_gh23548); every complex case (test_dtypes_a with
# complex64/128, test_logsumexp_complex_sign, test_gh21610,
# test_gh21709_small_imaginary, the complex entries of test_gh22601); the private
# test_wrap_radians; test_device (array-API devices); and the 0-d inputs of
# test_xp_invalid_input(arg=1), which ce_lib rejects by design (axis needs >= 1 dim).
# The 0-d softmax/log_softmax "scalar" cases are ported on a length-1 array.

_INF = math.inf
_NAN = math.nan

LOGSUMEXP_1D_CASES = [
    # id, input, expected, the first SciPy that computes it (None: every supported SciPy)
    # test_logsumexp: zero-size array -> log of an empty sum
    pytest.param(np.array([]), -_INF, None, id="empty"),
    # test_logsumexp: large inputs, log(sum(exp(arange(200))))
    pytest.param(np.arange(200.0), float(np.log(np.sum(np.exp(np.arange(200.0))))), None, id="arange200"),
    # test_logsumexp: [1000, 1000] -> 1000 + log 2
    pytest.param(np.array([1000.0, 1000.0]), 1000.0 + math.log(2.0), None, id="1000_1000"),
    # test_logsumexp: full((1000,), 10000) (an int array) -> 10000 + log 1000
    pytest.param(np.full((1000,), 10000), 10000.0 + math.log(1000), None, id="int_10000_x1000"),
    # test_logsumexp: special values
    pytest.param(np.array([_INF]), _INF, None, id="inf"),
    pytest.param(np.array([-_INF]), -_INF, None, id="-inf"),
    pytest.param(np.array([_NAN]), _NAN, None, id="nan"),
    pytest.param(np.array([-_INF, -_INF]), -_INF, None, id="all_-inf"),
    # test_gh22601_infinite_elements, the real-valued pairs (ref = log(sum(exp([x, y]))))
    pytest.param(np.array([-_INF, -_INF]), -_INF, None, id="gh22601_-inf_-inf"),
    pytest.param(np.array([-_INF, _INF]), _INF, None, id="gh22601_-inf_inf"),
    pytest.param(np.array([_INF, -_INF]), _INF, None, id="gh22601_inf_-inf"),
    pytest.param(np.array([_INF, _INF]), _INF, None, id="gh22601_inf_inf"),
    # test_gh18295: log1p accuracy, ref = logaddexp(0, -40) = log1p(exp(-40))
    pytest.param(np.array([0.0, -40.0]), 4.248354255291589e-18, (1, 15), id="gh18295_0_-40"),
    # test_array_like: a plain list
    pytest.param([1000, 1000], 1000.0 + math.log(2.0), None, id="list_1000_1000"),
    # test_xp_invalid_input(arg=[1, 2, 3])
    pytest.param([1, 2, 3], math.log(math.e + math.e**2 + math.e**3), None, id="list_1_2_3"),
]


@pytest.mark.parametrize(("x", "expected", "scipy_since"), LOGSUMEXP_1D_CASES)
def test_logsumexp_scipy_1d(x, expected, scipy_since):
    """scipy test_logsumexp.py::TestLogSumExp::{test_logsumexp, test_gh18295,
    test_gh22601_infinite_elements (real pairs), test_array_like, test_xp_invalid_input}.

    The cross-check against ``scipy.special`` needs a SciPy that gets the case
    right: gh-18295 (log1p accuracy) was fixed in SciPy 1.15.0, and SciPy 1.14
    (the oldest supported, requirements-oldest.txt) returns 0.0 for [0, -40].
    The ported expected value is checked whatever the SciPy.
    """
    actual = ce.logsumexp(x)
    assert actual.shape == ()
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=0)
    if scipy_since is None or _SCIPY_VERSION >= scipy_since:
        np.testing.assert_allclose(actual, _scipy(sc.logsumexp, x), rtol=RTOL, atol=0)


def test_logsumexp_scipy_gh18295_matches_logaddexp():
    """scipy test_logsumexp.py::TestLogSumExp::test_gh18295: against np.logaddexp, as in the source."""
    a = np.array([0.0, -40.0])
    np.testing.assert_allclose(ce.logsumexp(a), np.logaddexp(a[0], a[1]), rtol=1e-15, atol=0)


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_logsumexp_scipy_many_tiny_values(axis):
    """scipy test_logsumexp.py::TestLogSumExp::test_logsumexp, the 1e-40 x 1e6 block:
    exp(logsumexp(log X)) == sum(X) for axis None / 0 / 1 (axis=None ported by flattening)."""
    x = np.full(1_000_000, 1e-40)
    big_x = np.stack([x, x])
    log_x = np.stack([np.log(x), np.log(x)])
    if axis is None:
        actual = ce.logsumexp(log_x.reshape(-1))
    else:
        actual = ce.logsumexp(log_x, axis=axis)
    np.testing.assert_allclose(np.exp(actual), np.sum(big_x, axis=axis), rtol=1e-12)
    np.testing.assert_allclose(actual, _scipy(sc.logsumexp, log_x, axis=axis), rtol=1e-13)


def test_logsumexp_scipy_different_magnitudes_axis_keepdims():
    """scipy test_logsumexp.py::TestLogSumExp::test_logsumexp: [[1e10, 1e-10], [-1e10, -inf]]
    along axis=-1, with keepdims, and over axes (-1, -2) (ported by flattening)."""
    a = np.array([[1e10, 1e-10], [-1e10, -np.inf]])
    ref = np.array([1e10, -1e10])
    np.testing.assert_allclose(ce.logsumexp(a, axis=-1), ref, rtol=RTOL)
    np.testing.assert_allclose(_scipy(sc.logsumexp, a, axis=-1), ref, rtol=RTOL)

    kept = ce.logsumexp(a, axis=-1, keepdims=True)
    assert kept.shape == (2, 1)
    np.testing.assert_allclose(kept, ref[:, None], rtol=RTOL)
    np.testing.assert_allclose(_scipy(sc.logsumexp, a, axis=-1, keepdims=True), ref[:, None], rtol=RTOL)

    np.testing.assert_allclose(ce.logsumexp(a.reshape(-1)), 1e10, rtol=RTOL)
    np.testing.assert_allclose(_scipy(sc.logsumexp, a, axis=(-1, -2)), 1e10, rtol=RTOL)


def test_logsumexp_scipy_shape():
    """scipy test_logsumexp.py::TestLogSumExp::test_logsumexp_shape, adapted: the source passes
    b=ones_like(a), which is the identity weight, so it is dropped; axis=(1, 3) is ported by
    moving those axes last and flattening them."""
    a = np.ones((1, 2, 3, 4))
    r = ce.logsumexp(a, axis=2)
    assert r.shape == (1, 2, 4)
    np.testing.assert_allclose(r, np.full((1, 2, 4), 1.0 + math.log(3)), rtol=RTOL)
    np.testing.assert_allclose(r, _scipy(sc.logsumexp, a, axis=2), rtol=RTOL)

    r = ce.logsumexp(_lse_last_axes(np.moveaxis(a, (1, 3), (-2, -1)), 2))
    assert r.shape == (1, 3)
    np.testing.assert_allclose(r, np.full((1, 3), 1.0 + math.log(8)), rtol=RTOL)
    np.testing.assert_allclose(r, _scipy(sc.logsumexp, a, axis=(1, 3)), rtol=RTOL)


@pytest.mark.parametrize(
    ("dtype", "result_dtype", "rtol"),
    [
        (np.float32, np.float32, 1e-6),
        (np.float64, np.float64, RTOL),
        (np.int32, np.float64, RTOL),
        (np.int64, np.float64, RTOL),
    ],
)
def test_logsumexp_scipy_dtypes(dtype, result_dtype, rtol):
    """scipy test_logsumexp.py::TestLogSumExp::test_dtypes_a (real dtypes; complex left out):
    logsumexp([1000, 1000]) = 1000 + log 2, floats keep their dtype, integers give float64."""
    a = np.array([1000.0, 1000.0]).astype(dtype)
    actual = ce.logsumexp(a)
    assert actual.dtype == result_dtype
    np.testing.assert_allclose(actual, 1000.0 + math.log(2.0), rtol=rtol)
    ref = _scipy(sc.logsumexp, a)
    assert ref.dtype == result_dtype
    np.testing.assert_allclose(actual, ref, rtol=rtol)


def test_logsumexp_scipy_no_writeback():
    """scipy test_logsumexp.py::TestLogSumExp::test_no_writeback (the b= half left out)."""
    a = np.array([5.0, 4.0])
    actual = ce.logsumexp(a)
    np.testing.assert_array_equal(a, [5.0, 4.0])
    np.testing.assert_allclose(actual, math.log(math.exp(5) + math.exp(4)), rtol=RTOL)


# -- softmax ---------------------------------------------------------------

# Expected values computed by the SciPy authors with mpmath (dps = 200).
_SOFTMAX_ARANGE4 = np.array(
    [0.03205860328008499, 0.08714431874203256, 0.23688281808991013, 0.6439142598879722]
)
_SOFTMAX_2X4_X = np.array([[-25.0, 0.0, 25.0, 50.0], [1.0, 325.0, 749.0, 750.0]])
_SOFTMAX_2X4_EXPECTED = np.array(
    [
        [2.678636961770877e-33, 1.9287498479371314e-22, 1.3887943864771144e-11, 0.999999999986112],
        [0.0, 1.9444526359919372e-185, 0.2689414213699951, 0.7310585786300048],
    ]
)


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        # test_softmax_fixtures
        pytest.param(np.array([1000.0, 0.0, 0.0, 0.0]), [1.0, 0.0, 0.0, 0.0], id="1000_0_0_0"),
        pytest.param(np.array([1.0, 1.0]), [0.5, 0.5], id="1_1"),
        pytest.param(np.array([0.0, 1.0]), np.array([1.0, np.e]) / (1 + np.e), id="0_1"),
        pytest.param(np.arange(4.0), _SOFTMAX_ARANGE4, id="arange4_mpmath"),
        pytest.param(np.arange(4.0) + 100, _SOFTMAX_ARANGE4, id="arange4_plus100_translation"),
        # test_softmax_int_array
        pytest.param(np.array([1000, 0, 0, 0]), [1.0, 0.0, 0.0, 0.0], id="int_array"),
        # test_softmax_array_like
        pytest.param([1000, 0, 0, 0], [1.0, 0.0, 0.0, 0.0], id="list"),
        # test_softmax_scalar: softmax(1000) == 1, ported on a length-1 array
        pytest.param(np.array([1000.0]), [1.0], id="scalar_as_length1"),
    ],
)
def test_softmax_scipy_fixtures(x, expected):
    """scipy test_logsumexp.py::TestSoftmax::{test_softmax_fixtures, test_softmax_int_array,
    test_softmax_array_like, test_softmax_scalar}; rtol=1e-13 as in the source."""
    np.testing.assert_allclose(ce.softmax(x), expected, rtol=1e-13, atol=0)
    np.testing.assert_allclose(ce.softmax(x), _scipy(sc.softmax, x), rtol=1e-13, atol=0)


def test_softmax_scipy_axis_none_2d():
    """scipy test_logsumexp.py::TestSoftmax::test_softmax_fixtures, axis=None on a (2, 2) array
    (SciPy's default); ported by flattening and reshaping back."""
    x = np.arange(4.0).reshape(2, 2)
    actual = ce.softmax(x.reshape(-1)).reshape(2, 2)
    np.testing.assert_allclose(actual, _SOFTMAX_ARANGE4.reshape(2, 2), rtol=1e-13, atol=0)
    np.testing.assert_allclose(actual, _scipy(sc.softmax, x), rtol=1e-13, atol=0)


@pytest.mark.parametrize(
    ("axis", "expected"),
    [(0, [[0.5, 0.5], [0.5, 0.5]]), (1, [[1.0, 0.0], [1.0, 0.0]])],
)
def test_softmax_scipy_multi_axes_1000(axis, expected):
    """scipy test_logsumexp.py::TestSoftmax::test_softmax_multi_axes, [[1000, 0], [1000, 0]]."""
    x = np.array([[1000.0, 0.0], [1000.0, 0.0]])
    np.testing.assert_allclose(ce.softmax(x, axis=axis), expected, rtol=1e-13, atol=0)
    np.testing.assert_allclose(_scipy(sc.softmax, x, axis=axis), expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize("layout", ["rows_axis1", "transposed_axis0", "3d_axes12"])
def test_softmax_scipy_multi_axes_mpmath(layout):
    """scipy test_logsumexp.py::TestSoftmax::test_softmax_multi_axes, the mpmath 2x4 case
    (includes an exact 0 and 1.9e-185); the 3-d axis=(1, 2) case is ported by flattening."""
    x, expected = _SOFTMAX_2X4_X, _SOFTMAX_2X4_EXPECTED
    if layout == "rows_axis1":
        actual, ref = ce.softmax(x, axis=1), _scipy(sc.softmax, x, axis=1)
    elif layout == "transposed_axis0":
        expected = expected.T
        actual, ref = ce.softmax(x.T, axis=0), _scipy(sc.softmax, x.T, axis=0)
    else:
        x3d = x.reshape(2, 2, 2)
        expected = expected.reshape(2, 2, 2)
        actual = ce.softmax(_lse_last_axes(x3d, 2), axis=-1).reshape(2, 2, 2)
        ref = _scipy(sc.softmax, x3d, axis=(1, 2))
    np.testing.assert_allclose(actual, expected, rtol=1e-13, atol=0)
    np.testing.assert_allclose(actual, ref, rtol=1e-13, atol=0)


# -- log_softmax -----------------------------------------------------------

_LOG_SOFTMAX_ARANGE4 = np.array(
    [-3.4401896985611953, -2.4401896985611953, -1.4401896985611953, -0.44018969856119533]
)


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        # test_log_softmax_basic / _int_array / _array_like
        pytest.param(np.array([1000.0, 1.0]), [0.0, -999.0], id="basic_1000_1"),
        pytest.param(np.array([1000, 1]), [0.0, -999.0], id="int_array"),
        pytest.param([1000, 1], [0.0, -999.0], id="list"),
        # test_log_softmax_scalar: log_softmax(1.0) == 0, ported on a length-1 array
        pytest.param(np.array([1.0]), [0.0], id="scalar_as_length1"),
        # test_log_softmax_translation (offset 0 and 100), mpmath reference
        pytest.param(np.arange(4.0), _LOG_SOFTMAX_ARANGE4, id="arange4_offset0"),
        pytest.param(np.arange(4.0) + 100, _LOG_SOFTMAX_ARANGE4, id="arange4_offset100"),
    ],
)
def test_log_softmax_scipy_1d(x, expected):
    """scipy test_logsumexp.py::TestLogSoftmax::{test_log_softmax_basic, _int_array,
    _array_like, _scalar, _translation}; rtol=1e-13 as in the source."""
    np.testing.assert_allclose(ce.log_softmax(x), expected, rtol=1e-13, atol=0)
    np.testing.assert_allclose(ce.log_softmax(x), _scipy(sc.log_softmax, x), rtol=1e-13, atol=0)


@pytest.mark.parametrize("layout", ["axis_none_2x2", "2d_axis1", "2d_axis0_transposed", "3d_axes12"])
def test_log_softmax_scipy_layouts(layout):
    """scipy test_logsumexp.py::TestLogSoftmax::{test_log_softmax_noneaxis,
    test_log_softmax_2d_axis1, test_log_softmax_2d_axis0, test_log_softmax_3d}; axis=None and
    axis=(1, 2) ported by flattening."""
    if layout == "axis_none_2x2":
        x = np.arange(4.0).reshape(2, 2)
        expected = _LOG_SOFTMAX_ARANGE4.reshape(2, 2)
        actual = ce.log_softmax(x.reshape(-1)).reshape(2, 2)
        ref = _scipy(sc.log_softmax, x)
    else:
        x = np.arange(8.0).reshape(2, 4)
        expected = np.stack([_LOG_SOFTMAX_ARANGE4, _LOG_SOFTMAX_ARANGE4])
        if layout == "2d_axis1":
            actual, ref = ce.log_softmax(x, axis=1), _scipy(sc.log_softmax, x, axis=1)
        elif layout == "2d_axis0_transposed":
            expected = expected.T
            actual, ref = ce.log_softmax(x.T, axis=0), _scipy(sc.log_softmax, x.T, axis=0)
        else:
            x3d = x.reshape(2, 2, 2)
            expected = expected.reshape(2, 2, 2)
            actual = ce.log_softmax(_lse_last_axes(x3d, 2)).reshape(2, 2, 2)
            ref = _scipy(sc.log_softmax, x3d, axis=(1, 2))
    np.testing.assert_allclose(actual, expected, rtol=1e-13, atol=0)
    np.testing.assert_allclose(actual, ref, rtol=1e-13, atol=0)


@pytest.mark.parametrize(
    ("axis", "expected"),
    [(0, np.log(0.5) * np.ones((2, 2))), (1, [[0.0, -999.0], [0.0, -999.0]])],
)
def test_log_softmax_scipy_axes(axis, expected):
    """scipy test_logsumexp.py::TestLogSoftmax::test_axes, [[1000, 1], [1000, 1]]."""
    x = np.array([[1000.0, 1.0], [1000.0, 1.0]])
    np.testing.assert_allclose(ce.log_softmax(x, axis=axis), expected, rtol=1e-13, atol=0)
    np.testing.assert_allclose(_scipy(sc.log_softmax, x, axis=axis), expected, rtol=1e-13, atol=0)


# ==========================================================================
# 2. Optax: optax/losses/_classification_test.py
# ==========================================================================
#
# Mapping (checked against optax/losses/_classification.py):
#   softmax_cross_entropy(z, t)                       -> ce.cross_entropy(z, t, reduction="none")
#   safe_softmax_cross_entropy(z, t)                  -> the same (ce_lib drops q * log p where q = 0)
#   softmax_cross_entropy_with_integer_labels(z, y)   -> ce.cross_entropy(z, y, reduction="none")
#   poly_loss_cross_entropy(z, t, epsilon=0)          -> ce.cross_entropy(z, t, reduction="none")
#       (poly-1 = CE + eps * (1 - p_t); eps = 0 is exactly CE)
#   mean(sigmoid_binary_cross_entropy(z, y))          -> ce.binary_cross_entropy_with_logits(z, y)
#   multiclass_hinge_loss(s, y) = max_i(s_i + 1 - [i = y]) - s_y
#       = max(max_{i != y} s_i - s_y + 1, 0)          -> ce.hinge_loss(s, y, margin=1.0)
#   multiclass_perceptron_loss(s, y) = max_i s_i - s_y
#       = max(max_{i != y} s_i - s_y, 0)              -> ce.hinge_loss(s, y, margin=0.0)
#   hinge_loss(s, l) = relu(1 - s l), l = +-1          -> ce.hinge_loss([0, s], (l + 1) / 2, margin=1.0)
#   perceptron_loss(s, l) = relu(-s l)                 -> ce.hinge_loss([0, s], (l + 1) / 2, margin=0.0)
#       (with two logits [0, s] the only competitor of class 1 is 0 and vice versa)
# Left out: poly_loss with eps != 0, sparsemax losses, (generalized) KL divergences, CTC and
# sigmoid focal loss (no ce_lib counterpart; the KL cases' log-probabilities are rounded to
# 4 digits, so they are not exactly normalised and do not map onto a softmax-based CE);
# the per-logit/`where=` mask cases (ce_lib has no `where=`); the random-input
# axis/mask/gradient-consistency tests (no hard-coded values).

_OPTAX_YS = np.array([[10.0, 1.0, -2.0], [1.0, 4.0, 0.2]], dtype=np.float32)
_OPTAX_TS = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=np.float32)
_OPTAX_LABELS = np.array([1, 0], dtype=np.int32)
_OPTAX_EXP = np.array([9.00013, 3.0696733], dtype=np.float32)


def _hand_ce(z, t):
    """-sum_c t_c (z_c - log sum_k exp z_k), written out with math.* in float64."""
    out = []
    for row_z, row_t in zip(np.asarray(z, dtype=np.float64), np.asarray(t, dtype=np.float64), strict=True):
        lse = math.log(sum(math.exp(v) for v in row_z))
        out.append(-sum(tc * (zc - lse) for zc, tc in zip(row_z, row_t, strict=True) if tc != 0))
    return np.array(out)


@pytest.mark.parametrize("batched", [False, True], ids=["scalar", "batched"])
def test_optax_softmax_cross_entropy(batched):
    """optax _classification_test.py::SoftmaxCrossEntropyTest::{test_scalar, test_batched}."""
    if batched:
        ys, ts, exp = _OPTAX_YS, _OPTAX_TS, _OPTAX_EXP
    else:
        ys, ts, exp = _OPTAX_YS[0], _OPTAX_TS[0], _OPTAX_EXP[0]
    actual = ce.cross_entropy(ys, ts, reduction="none")
    assert actual.dtype == np.float32
    np.testing.assert_allclose(actual, exp, atol=1e-4)
    # The same case in float64 against the formula written out by hand, tightly.
    actual64 = ce.cross_entropy(_OPTAX_YS.astype(np.float64), _OPTAX_TS.astype(np.float64), reduction="none")
    np.testing.assert_allclose(actual64, _hand_ce(_OPTAX_YS, _OPTAX_TS), rtol=RTOL)


@pytest.mark.parametrize("batched", [False, True], ids=["scalar", "batched"])
def test_optax_softmax_cross_entropy_with_integer_labels(batched):
    """optax _classification_test.py::SoftmaxCrossEntropyWithIntegerLabelsTest::
    test_consistent_with_softmax_cross_entropy_{scalar,batched}: labels [1, 0] must give the
    one-hot softmax_cross_entropy values [9.00013, 3.0696733] (atol=1e-4, as there)."""
    ys, ys_labels, exp = (
        (_OPTAX_YS, _OPTAX_LABELS, _OPTAX_EXP) if batched else (_OPTAX_YS[0], _OPTAX_LABELS[0], _OPTAX_EXP[0])
    )
    actual = ce.cross_entropy(ys, ys_labels, reduction="none")
    np.testing.assert_allclose(actual, exp, atol=1e-4)
    actual64 = ce.cross_entropy(_OPTAX_YS.astype(np.float64), _OPTAX_LABELS, reduction="none")
    np.testing.assert_allclose(actual64, _hand_ce(_OPTAX_YS, _OPTAX_TS), rtol=RTOL)


def test_optax_safe_softmax_cross_entropy_masked_logits():
    """optax _classification_test.py::SafeSoftmaxCrossEntropyTest::test_batched: -inf logits
    (masked classes) with probability targets; a zero target on a -inf logit contributes 0,
    a nonzero one makes the loss +inf."""
    ys = np.array(
        [
            [10.0, 1.0, -2.0],
            [1.0, 4.0, 0.2],
            [-np.inf, 0.0, 0.0],
            [-np.inf, 0.0, 0.0],
            [-np.inf, 0.0, -np.inf],
        ],
        dtype=np.float32,
    )
    ts = np.array(
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.4, 0.3, 0.3], [0.0, 1.0, 0.0]],
        dtype=np.float32,
    )
    exp = np.array([9.00013, 3.0696733, 0.693147, np.inf, 0.0], dtype=np.float32)
    np.testing.assert_allclose(ce.cross_entropy(ys, ts, reduction="none"), exp, atol=1e-4)


@pytest.mark.parametrize(
    ("logits", "labels", "expected"),
    [
        pytest.param([0.14, 1.456, 2.356, -0.124, -2.47], [0.1, 0.15, 0.2, 0.25, 0.3], 2.8990, id="scalar"),
        pytest.param(
            [[4.0, 2.0, 1.0], [0.0, 5.0, 1.0]],
            [[1.0, 0.0, 0.0], [0.0, 0.8, 0.2]],
            [0.1698, 0.8247],
            id="batched",
        ),
    ],
)
def test_optax_poly_loss_eps0_is_cross_entropy(logits, labels, expected):
    """optax _classification_test.py::PolyLossTest::{test_scalar, test_batched} with eps=0
    (values from TF's poly1_cross_entropy; poly-1 with eps=0 is softmax cross-entropy)."""
    actual = ce.cross_entropy(np.array(logits), np.array(labels), reduction="none")
    np.testing.assert_allclose(actual, expected, atol=1e-4)


@pytest.mark.parametrize(
    ("preds", "labels", "expected"),
    [
        ([-1e09, -1e-09], [1.0, 0.0], 5e08),
        ([-1e09, -1e-09], [0.0, 1.0], 0.3465736),
        ([1e09, 1e-09], [1.0, 0.0], 0.3465736),
        ([1e09, 1e-09], [0.0, 1.0], 5e08),
        ([-1e09, 1e-09], [1.0, 0.0], 5e08),
        ([-1e09, 1e-09], [0.0, 1.0], 0.3465736),
        ([1e09, -1e-09], [1.0, 0.0], 0.3465736),
        ([1e09, -1e-09], [0.0, 1.0], 5e08),
        ([0.0, 0.0], [1.0, 0.0], 0.6931472),
        ([0.0, 0.0], [0.0, 1.0], 0.6931472),
    ],
)
def test_optax_sigmoid_binary_cross_entropy(preds, labels, expected):
    """optax _classification_test.py::SigmoidCrossEntropyTest::test_sigmoid_cross_entropy
    (mean of the per-element losses; rtol=atol=1e-6 as in the source)."""
    actual = ce.binary_cross_entropy_with_logits(np.array(preds), np.array(labels))
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("scores", "labels", "margin", "expected"),
    [
        # HingeTest::test_multi_class / test_batched_multi_class (multiclass_hinge_loss)
        pytest.param([10.0, 3.0], 1, 1.0, 8.0, id="multiclass_hinge"),
        pytest.param([[10.0, 3.0], [11.0, -2.0]], [1, 0], 1.0, [8.0, 0.0], id="multiclass_hinge_batched"),
        # PerceptronTest::test_multi_class / test_batched_multi_class (multiclass_perceptron_loss)
        pytest.param([10.0, 3.0], 1, 0.0, 7.0, id="multiclass_perceptron"),
        pytest.param(
            [[10.0, 3.0], [11.0, -2.0]], [1, 0], 0.0, [7.0, 0.0], id="multiclass_perceptron_batched"
        ),
    ],
)
def test_optax_multiclass_hinge_and_perceptron(scores, labels, margin, expected):
    """optax _classification_test.py::{HingeTest, PerceptronTest}::*multi_class: the source's
    reference_impl values, max_i(s_i + margin*[i != y]) - s_y, hard-coded."""
    actual = ce.hinge_loss(np.array(scores), np.array(labels), margin=margin, reduction="none")
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=0)


@pytest.mark.parametrize(
    ("scores", "labels01", "margin", "expected"),
    [
        # HingeTest::test_binary / test_batched_binary: relu(1 - s * (2 l - 1))
        pytest.param([10.0], [1], 1.0, [0.0], id="binary_hinge"),
        pytest.param([10.0, 20.0], [1, 0], 1.0, [0.0, 21.0], id="binary_hinge_batched"),
        # PerceptronTest::test_binary / test_batched_binary: relu(-s * (2 l - 1))
        pytest.param([10.0], [1], 0.0, [0.0], id="binary_perceptron"),
        pytest.param([10.0, 20.0], [1, 0], 0.0, [0.0, 20.0], id="binary_perceptron_batched"),
    ],
)
def test_optax_binary_hinge_and_perceptron_as_two_logits(scores, labels01, margin, expected):
    """optax _classification_test.py::{HingeTest, PerceptronTest}::*binary, adapted: a binary
    score s is the two-class logits [0, s], for which ce.hinge_loss is relu(margin - s (2 l - 1))."""
    s = np.array(scores)
    two_logits = np.stack([np.zeros_like(s), s], axis=-1)
    actual = ce.hinge_loss(two_logits, np.array(labels01), margin=margin, reduction="none")
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=0)


# ==========================================================================
# 3. PyTorch's documented formulas, computed by hand with plain NumPy
# ==========================================================================
#
# torch.nn.CrossEntropyLoss, BCELoss, BCEWithLogitsLoss, MultiMarginLoss, MSELoss docs.
# Nothing below calls ce_lib or torch to produce an expected value.

_Z = np.array([[1.0, 2.0, 0.5, -1.0], [0.0, 0.0, 0.0, 0.0], [3.0, -2.0, 1.0, 0.5]])
_Y = np.array([1, 3, 0])
_W = np.array([0.2, 1.0, 2.0, 0.5])


def _np_log_softmax(z, axis=-1):
    """log p = z - log(sum exp z), plain NumPy (the inputs here are small)."""
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def test_torch_cross_entropy_mean_sum_none():
    """torch CrossEntropyLoss: l_n = -log(exp(z_{n,y_n}) / sum_c exp(z_{n,c})); mean over N."""
    logp = _np_log_softmax(_Z)
    per = -np.array([logp[0, 1], logp[1, 3], logp[2, 0]])
    np.testing.assert_allclose(per[1], math.log(4), rtol=RTOL)  # uniform logits
    np.testing.assert_allclose(ce.cross_entropy(_Z, _Y, reduction="none"), per, rtol=RTOL)
    np.testing.assert_allclose(ce.cross_entropy(_Z, _Y, reduction="sum"), per.sum(), rtol=RTOL)
    np.testing.assert_allclose(ce.cross_entropy(_Z, _Y), per.mean(), rtol=RTOL)


def test_torch_cross_entropy_weight():
    """torch CrossEntropyLoss with weight: l_n = -w_{y_n} log p_{n,y_n};
    mean = sum_n l_n / sum_n w_{y_n}."""
    logp = _np_log_softmax(_Z)
    w_y = np.array([_W[1], _W[3], _W[0]])
    per = -w_y * np.array([logp[0, 1], logp[1, 3], logp[2, 0]])
    np.testing.assert_allclose(ce.cross_entropy(_Z, _Y, weight=_W, reduction="none"), per, rtol=RTOL)
    np.testing.assert_allclose(ce.cross_entropy(_Z, _Y, weight=_W), per.sum() / w_y.sum(), rtol=RTOL)


def test_torch_cross_entropy_ignore_index():
    """torch CrossEntropyLoss, ignore_index: ignored targets give 0 and leave the mean's
    denominator (default -100; and a custom index 3 combined with weight)."""
    logp = _np_log_softmax(_Z)
    y = np.array([1, -100, 0])
    per = np.array([-logp[0, 1], 0.0, -logp[2, 0]])
    np.testing.assert_allclose(ce.cross_entropy(_Z, y, reduction="none"), per, rtol=RTOL)
    np.testing.assert_allclose(ce.cross_entropy(_Z, y), per.sum() / 2, rtol=RTOL)

    per_w = np.array([-_W[1] * logp[0, 1], 0.0, -_W[0] * logp[2, 0]])
    np.testing.assert_allclose(
        ce.cross_entropy(_Z, _Y, weight=_W, ignore_index=3), per_w.sum() / (_W[1] + _W[0]), rtol=RTOL
    )


def test_torch_cross_entropy_all_ignored_is_nan():
    """torch CrossEntropyLoss: if every target is ignored, mean is 0/0 = nan (sum is 0)."""
    y = np.array([-100, -100, -100])
    assert np.isnan(ce.cross_entropy(_Z, y))
    np.testing.assert_array_equal(ce.cross_entropy(_Z, y, reduction="sum"), 0.0)


@pytest.mark.parametrize("eps", [0.1, 0.35])
def test_torch_cross_entropy_label_smoothing(eps):
    """torch CrossEntropyLoss, label_smoothing (no weight):
    l_n = (1 - eps)(-log p_{n,y_n}) + (eps / C) sum_c (-log p_{n,c}); mean over N."""
    logp = _np_log_softmax(_Z)
    c = _Z.shape[1]
    nll = -np.array([logp[0, 1], logp[1, 3], logp[2, 0]])
    smooth = -logp.sum(axis=1)
    per = (1 - eps) * nll + eps / c * smooth
    actual = ce.cross_entropy(_Z, _Y, label_smoothing=eps, reduction="none")
    np.testing.assert_allclose(actual, per, rtol=RTOL)
    np.testing.assert_allclose(ce.cross_entropy(_Z, _Y, label_smoothing=eps), per.mean(), rtol=RTOL)


def test_torch_cross_entropy_label_smoothing_weight_ignore():
    """torch CrossEntropyLoss, label_smoothing + weight + ignore_index (ATen's
    cross_entropy_loss_label_smoothing): (1 - eps) * nll_mean + (eps / C) *
    sum_{n kept} sum_c w_c (-log p_{n,c}) / sum_{n kept} w_{y_n}."""
    eps = 0.2
    c = _Z.shape[1]
    logp = _np_log_softmax(_Z)
    y = np.array([2, -100, 0])
    kept = [0, 2]
    w_y_sum = _W[2] + _W[0]
    nll_sum = -(_W[2] * logp[0, 2] + _W[0] * logp[2, 0])
    smooth_sum = -sum(np.sum(_W * logp[n]) for n in kept)
    expected = (1 - eps) * nll_sum / w_y_sum + eps / c * smooth_sum / w_y_sum
    actual = ce.cross_entropy(_Z, y, weight=_W, label_smoothing=eps)
    np.testing.assert_allclose(actual, expected, rtol=RTOL)


def test_torch_cross_entropy_probability_targets_weight_smoothing():
    """torch CrossEntropyLoss, probability targets: l_n = -sum_c w_c log p_{n,c} t'_{n,c},
    t' = (1 - eps) t + eps / C; mean divides by N (not by the weights)."""
    t = np.array([[0.1, 0.6, 0.3, 0.0], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    eps = 0.1
    c = _Z.shape[1]
    t_smooth = (1 - eps) * t + eps / c
    per = -np.sum(_W * _np_log_softmax(_Z) * t_smooth, axis=1)
    np.testing.assert_allclose(
        ce.cross_entropy(_Z, t, weight=_W, label_smoothing=eps, reduction="none"), per, rtol=RTOL
    )
    np.testing.assert_allclose(ce.cross_entropy(_Z, t, weight=_W, label_smoothing=eps), per.mean(), rtol=RTOL)


def test_torch_cross_entropy_axis1_layout():
    """torch CrossEntropyLoss on (N, C, d1) logits with (N, d1) targets, ported with axis=1;
    weighted mean over all N * d1 positions, written out with loops."""
    z = np.array(
        [
            [[0.5, -1.0], [2.0, 0.0], [-0.5, 1.5]],
            [[1.0, 1.0], [0.0, -2.0], [3.0, 0.25]],
        ]
    )  # (N=2, C=3, d1=2)
    y = np.array([[1, 2], [0, 1]])
    w = np.array([0.5, 2.0, 1.0])
    num = 0.0
    den = 0.0
    per = np.zeros((2, 2))
    for n in range(2):
        for d in range(2):
            col = z[n, :, d]
            logp = col - np.log(np.sum(np.exp(col)))
            per[n, d] = -w[y[n, d]] * logp[y[n, d]]
            num += per[n, d]
            den += w[y[n, d]]
    np.testing.assert_allclose(ce.cross_entropy(z, y, axis=1, weight=w, reduction="none"), per, rtol=RTOL)
    np.testing.assert_allclose(ce.cross_entropy(z, y, axis=1, weight=w), num / den, rtol=RTOL)


def test_torch_cross_entropy_grad_weight_ignore():
    """d/dz of torch's weighted, ignore_index mean CE: w_{y_n} (p_n - e_{y_n}) / sum w_{y_n}
    for kept rows, 0 for ignored rows (also optax CTCTest's softmax - one_hot, / batch)."""
    y = np.array([1, -100, 2])
    p = np.exp(_Z) / np.sum(np.exp(_Z), axis=1, keepdims=True)
    expected = np.zeros_like(_Z)
    for n in (0, 2):
        onehot = np.eye(4)[y[n]]
        expected[n] = _W[y[n]] * (p[n] - onehot)
    expected /= _W[1] + _W[2]
    np.testing.assert_allclose(ce.cross_entropy_grad(_Z, y, weight=_W), expected, rtol=RTOL, atol=1e-15)


def test_torch_binary_cross_entropy_log_clamp():
    """torch BCELoss: l_n = -[y log x + (1 - y) log(1 - x)] with each log clamped at -100,
    so x=0, y=1 (and x=1, y=0) cost exactly 100."""
    probs = np.array([0.0, 1.0, 0.0, 1.0, 0.5, 0.2])
    target = np.array([1.0, 0.0, 0.0, 1.0, 0.3, 1.0])
    expected = np.array([100.0, 100.0, 0.0, 0.0, math.log(2.0), -math.log(0.2)])
    np.testing.assert_allclose(ce.binary_cross_entropy(probs, target, reduction="none"), expected, rtol=RTOL)
    np.testing.assert_allclose(ce.binary_cross_entropy(probs, target), expected.mean(), rtol=RTOL)


def test_torch_binary_cross_entropy_weight():
    """torch BCELoss with a weight broadcast over the batch: l_n = -w_n [y log x + (1 - y) log(1 - x)]."""
    x = np.array([[0.9, 0.3, 0.5], [0.05, 0.7, 0.99]])
    y = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.25]])
    w = np.array([2.0, 0.5, 1.5])
    per = -w * (y * np.log(x) + (1 - y) * np.log(1 - x))
    np.testing.assert_allclose(ce.binary_cross_entropy(x, y, weight=w, reduction="none"), per, rtol=RTOL)
    np.testing.assert_allclose(ce.binary_cross_entropy(x, y, weight=w, reduction="sum"), per.sum(), rtol=RTOL)
    np.testing.assert_allclose(ce.binary_cross_entropy(x, y, weight=w), per.mean(), rtol=RTOL)


def test_torch_binary_cross_entropy_grad_clamp():
    """torch's BCE backward (aten binary_cross_entropy_backward): (x - y) / max(x (1 - x), EPSILON),
    / N under mean. EPSILON is declared ``float`` in ATen, so even for float64 tensors it is
    float32(1e-12) = 9.99999996e-13 (torch 2.13 gives -250000000998.9507 for x=0, y=1, N=4)."""
    eps = float(np.float32(1e-12))
    x = np.array([0.0, 1.0, 0.25, 0.5])
    y = np.array([1.0, 0.0, 1.0, 0.5])
    expected = np.array([-1.0 / eps, 1.0 / eps, (0.25 - 1.0) / (0.25 * 0.75), 0.0]) / 4
    np.testing.assert_allclose(ce.binary_cross_entropy_grad(x, y), expected, rtol=RTOL, atol=0)


def test_torch_bce_with_logits_pos_weight():
    """torch BCEWithLogitsLoss: l_{n,c} = -w_{n,c} [p_c y log s(x) + (1 - y) log(1 - s(x))],
    s the sigmoid; pos_weight p_c per class (last axis), weight broadcast."""
    x = np.array([[0.5, -1.5, 2.0], [-0.25, 3.0, 0.0]])
    y = np.array([[1.0, 0.0, 0.3], [1.0, 1.0, 0.0]])
    pw = np.array([3.0, 0.5, 2.0])
    w = np.array([[1.0], [0.25]])
    s = 1.0 / (1.0 + np.exp(-x))
    per = -(pw * y * np.log(s) + (1 - y) * np.log(1 - s))
    np.testing.assert_allclose(
        ce.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="none"), per, rtol=RTOL
    )
    np.testing.assert_allclose(
        ce.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw), (w * per).mean(), rtol=RTOL
    )


def test_torch_bce_with_logits_large_logits():
    """torch BCEWithLogitsLoss at |x| = 1000: the confident-wrong terms cost |x| (times
    pos_weight for a positive), the confident-right ones 0 (log(1 + e^-1000) = 0 in float64)."""
    x = np.array([1000.0, -1000.0, 1000.0, -1000.0])
    y = np.array([0.0, 1.0, 1.0, 0.0])
    pw = 2.0
    expected = np.array([1000.0, pw * 1000.0, 0.0, 0.0])
    actual = ce.binary_cross_entropy_with_logits(x, y, pos_weight=np.array(pw), reduction="none")
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=0)


def test_torch_bce_with_logits_grad_pos_weight():
    """torch's BCE-with-logits backward: w ((p y + 1 - y) s(x) - p y), / N under mean."""
    x = np.array([[0.5, -1.5, 2.0], [-0.25, 3.0, 0.0]])
    y = np.array([[1.0, 0.0, 0.3], [1.0, 1.0, 0.0]])
    pw = np.array([3.0, 0.5, 2.0])
    w = np.array([2.0, 1.0, 0.5])
    s = 1.0 / (1.0 + np.exp(-x))
    expected = w * ((pw * y + 1 - y) * s - pw * y) / x.size
    actual = ce.binary_cross_entropy_with_logits_grad(x, y, weight=w, pos_weight=pw)
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-15)


def test_torch_mse_loss():
    """torch MSELoss: l_n = (x_n - y_n)^2 (no 1/2), mean / sum / none."""
    x = np.array([[1.5, -2.0], [0.0, 4.0]])
    y = np.array([[1.0, 1.0], [0.0, 2.5]])
    per = np.array([[0.25, 9.0], [0.0, 2.25]])
    np.testing.assert_allclose(ce.mse_loss(x, y, reduction="none"), per, rtol=RTOL)
    np.testing.assert_allclose(ce.mse_loss(x, y, reduction="sum"), 11.5, rtol=RTOL)
    np.testing.assert_allclose(ce.mse_loss(x, y), 11.5 / 4, rtol=RTOL)


def test_torch_multi_margin_loss_docs_example():
    """torch.nn.MultiMarginLoss docstring example: x = [[0.1, 0.2, 0.4, 0.8]], y = [3] gives
    0.25 * ((1 - (0.8 - 0.1)) + (1 - (0.8 - 0.2)) + (1 - (0.8 - 0.4))) = 0.3250."""
    x = np.array([[0.1, 0.2, 0.4, 0.8]])
    y = np.array([3])
    np.testing.assert_allclose(ce.multi_margin_loss(x, y), 0.325, rtol=RTOL)


_MM_Z = np.array([[0.1, 0.2, 0.4, 0.8], [2.0, -1.0, 1.5, 0.0], [0.0, 3.0, -0.5, 2.9]])
_MM_Y = np.array([3, 0, 1])
_MM_W = np.array([0.5, 2.0, 1.0, 3.0])


def _hand_multi_margin(z, y, p, margin, w=None):
    """sum_{i != y} w_y max(0, margin - z_y + z_i)^p / C, row by row with Python loops.

    The weight multiplies the *powered* hinge, as PyTorch computes it
    (aten multi_margin_loss kernel: h = z or z*z, then h *= weight[target]).
    The docs write max(0, w_y (margin - z_y + z_i))^p, which agrees only for p = 1.
    """
    out = []
    for row, t in zip(z, y, strict=True):
        c = len(row)
        total = 0.0
        for i in range(c):
            if i == t:
                continue
            h = max(0.0, margin - row[t] + row[i])
            total += (1.0 if w is None else w[t]) * h**p
        out.append(total / c)
    return np.array(out)


@pytest.mark.parametrize(
    ("p", "margin", "use_weight"),
    [(1, 1.0, False), (2, 1.0, False), (1, 0.5, False), (2, 2.0, False), (1, 1.0, True), (2, 0.5, True)],
)
def test_torch_multi_margin_loss(p, margin, use_weight):
    """torch MultiMarginLoss: l_n = sum_{i != y} w_y max(0, margin - x_y + x_i)^p / C, mean over N."""
    w = _MM_W if use_weight else None
    per = _hand_multi_margin(_MM_Z, _MM_Y, p, margin, w)
    actual = ce.multi_margin_loss(_MM_Z, _MM_Y, p=p, margin=margin, weight=w, reduction="none")
    np.testing.assert_allclose(actual, per, rtol=RTOL, atol=1e-15)
    np.testing.assert_allclose(
        ce.multi_margin_loss(_MM_Z, _MM_Y, p=p, margin=margin, weight=w), per.mean(), rtol=RTOL
    )


def test_torch_multi_margin_loss_grad_p2_weight():
    """d/dx of torch's MultiMarginLoss (p=2, weight, sum): for i != y with h_i > 0,
    2 w_y h_i / C; at the target, minus the sum of those."""
    margin = 0.5
    expected = np.zeros_like(_MM_Z)
    c = _MM_Z.shape[1]
    for n, (row, t) in enumerate(zip(_MM_Z, _MM_Y, strict=True)):
        for i in range(c):
            if i == t:
                continue
            h = margin - row[t] + row[i]
            if h > 0:
                expected[n, i] = 2.0 * _MM_W[t] * h / c
        expected[n, t] = -expected[n].sum()
    actual = ce.multi_margin_loss_grad(_MM_Z, _MM_Y, p=2, margin=margin, weight=_MM_W, reduction="sum")
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-15)
