"""The hidden-test vocabulary: :func:`check`.

A cell tagged ``hidden-tests`` in an assignment's source is a list of calls
to :func:`check`. Each call names an expression to evaluate in the student's
namespace (``"softmax(z)"``) and the inputs to evaluate it on
(``z=np.array(...)``). The grader never runs assertions in the student's
process: it asks the student's process for the raw value of the expression,
asks the instructor's solution for the same, and compares the two itself.

The same cell also runs in a plain Jupyter kernel (the instructor working on
the source notebook). There :func:`check` evaluates the expression at once
against the notebook's own namespace, so the instructor sees whether the
solution passes its own hidden tests.

This module needs only the standard library and NumPy.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Check", "check", "compare_values", "recording"]

#: JSON-representable input types passed to the sandbox as they are.
Scalar = bool | int | float | str | None
_NUMERIC_KINDS = "biufc"
_MISSING: Any = object()


@dataclass(frozen=True)
class Check:
    """One hidden test: an expression, its inputs and how to compare.

    Attributes
    ----------
    expr : str
        A Python expression evaluated in the student's namespace, with the
        inputs as extra local names.
    inputs : dict
        Name to value; values are NumPy arrays of a numeric or boolean dtype,
        or JSON scalars (``bool``, ``int``, ``float``, ``str``, ``None``).
    rtol, atol : float
        Tolerances of the comparison of floating-point results.
    name : str
        What the report calls this test (the expression by default).
    expect : object
        A fixed expected value, or ``None`` to compare with the instructor's
        solution only. The solution must agree with it.
    """

    expr: str
    inputs: dict[str, np.ndarray | Scalar] = field(default_factory=dict)
    rtol: float = 1e-7
    atol: float = 1e-12
    name: str = ""
    expect: np.ndarray | None = None


_RECORDER: contextvars.ContextVar[list[Check] | None] = contextvars.ContextVar("_RECORDER", default=None)


@contextlib.contextmanager
def recording() -> Iterator[list[Check]]:
    """Collect the :func:`check` calls made inside the ``with`` block instead of running them."""
    checks: list[Check] = []
    token = _RECORDER.set(checks)
    try:
        yield checks
    finally:
        _RECORDER.reset(token)


def _as_input(name: str, value: object) -> np.ndarray | Scalar:
    if value is None or isinstance(value, bool | int | float | str):
        if isinstance(value, float) and not math.isfinite(value):
            return np.asarray(value)  # JSON has no inf/nan: send it as an array
        return value
    arr = np.asarray(value)
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"input {name!r} must be numeric or boolean; got dtype {arr.dtype}")
    return arr


def check(
    expr: str,
    /,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-12,
    name: str | None = None,
    expect: object = _MISSING,
    **inputs: object,
) -> object:
    """Declare a hidden test (inside the grader) or run it (in a notebook).

    Parameters
    ----------
    expr : str
        Expression to evaluate in the student's namespace, e.g.
        ``"softmax(z)"``. It may use names from the setup cells and the inputs.
    rtol : float, default 1e-7
        Relative tolerance for floating-point results.
    atol : float, default 1e-12
        Absolute tolerance for floating-point results.
    name : str, optional
        Label shown in reports; defaults to ``expr``.
    expect : object, optional
        A fixed expected value. Without it the expected value is whatever the
        instructor's solution gives.
    **inputs : object
        The hidden inputs: NumPy arrays (numeric or boolean) or JSON scalars.
        They become local names while ``expr`` is evaluated. ``rtol``,
        ``atol``, ``name`` and ``expect`` are reserved.

    Returns
    -------
    object
        ``None`` while the grader records the tests; in a notebook, the value
        of ``expr``.
    """
    compile(expr, "<check>", "eval")  # a syntax error is the instructor's, report it now
    if not (rtol >= 0 and atol >= 0):
        raise ValueError(f"tolerances must be non-negative; got rtol={rtol}, atol={atol}")
    values = {k: _as_input(k, v) for k, v in inputs.items()}
    expected = None if expect is _MISSING else np.asarray(expect)
    if expected is not None and expected.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"expect must be numeric or boolean; got dtype {expected.dtype}")
    spec = Check(expr, values, float(rtol), float(atol), name or expr, expected)
    recorder = _RECORDER.get()
    if recorder is not None:
        recorder.append(spec)
        return None
    # Notebook mode: evaluate against the caller's namespace, right now.
    caller = sys._getframe(1).f_globals
    local = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in values.items()}
    value = eval(expr, {**caller, **local})  # the instructor's own expression, in their notebook
    if expected is not None:
        problem = compare_values(np.asarray(value), expected, spec.rtol, spec.atol)
        if problem:
            raise AssertionError(f"{spec.name}: {problem}")
    return value


def compare_values(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str | None:
    """Compare a submitted value with the expected one.

    Parameters
    ----------
    got : ndarray
        The student's value.
    want : ndarray
        The expected value.
    rtol : float
        Relative tolerance (floating-point values).
    atol : float
        Absolute tolerance (floating-point values).

    Returns
    -------
    str or None
        ``None`` when they agree, otherwise the reason, in words.
    """
    if got.dtype.kind not in _NUMERIC_KINDS:
        return f"the result has dtype {got.dtype}, not a number"
    if _family(got.dtype) != _family(want.dtype):
        return f"the result has dtype {got.dtype}; expected {want.dtype}"
    if got.dtype.kind in "fc" and got.dtype.itemsize < want.dtype.itemsize:
        return f"the result has dtype {got.dtype}, less precise than the expected {want.dtype}"
    if got.shape != want.shape:
        return f"the result has shape {got.shape}; expected shape {want.shape}"
    if want.dtype.kind in "biu":
        if got.dtype.kind == "c" or not np.array_equal(got.astype(np.float64), want.astype(np.float64)):
            return f"wrong value: expected {_short(want)}, got {_short(got)}"
        return None
    with np.errstate(all="ignore"):
        g = got.astype(np.complex128 if "c" in (got.dtype.kind, want.dtype.kind) else np.float64)
        w = want.astype(g.dtype)
        if np.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True):
            return None
        bad = ~np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
        diff = np.abs(g - w)[bad]
        finite = diff[np.isfinite(diff)]
        worst = (
            f"max abs difference {finite.max():.2e}"
            if finite.size
            else "non-finite values where finite ones are expected"
        )
    return f"values differ in {int(bad.sum())} of {bad.size} entries ({worst}; rtol {rtol:g}, atol {atol:g})"


def _family(dtype: np.dtype) -> str:
    """Booleans, integers (signed or not), real or complex floating point: a result must match."""
    return {"b": "bool", "i": "int", "u": "int", "f": "float", "c": "complex"}[dtype.kind]


def _short(a: np.ndarray) -> str:
    text = np.array2string(a, precision=6, threshold=6, edgeitems=2)
    return text if len(text) <= 80 else text[:77] + "..."
