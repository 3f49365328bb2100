"""The comparison logic of the reproducibility check (tools/repro.py), on made-up outputs.

Running the check itself takes minutes (``make repro``); these tests make sure that
what it reports is right: a moved number is drift, a mean that moves within its
printed spread is not, rounding-level error measures and timings are kept apart.
"""

from __future__ import annotations

import site_support  # noqa: F401  (puts tools/ on the path)
from repro import Result, compare, split_numbers, variants

CHAPTER = "book/part2/example"


def outputs(*per_variant: list[str | None]) -> dict:
    names = [f"v{i}" for i in range(len(per_variant))]
    return {
        (CHAPTER, name): Result(CHAPTER, name, True, 1.0, outputs=list(texts))
        for name, texts in zip(names, per_variant, strict=True)
    }, names


def kinds(found) -> list[tuple[str, str]]:
    return [(d.kind, d.context) for d in found]


def test_identical_outputs_report_nothing():
    results, names = outputs(["loss 0.1234\n"], ["loss 0.1234\n"])
    assert compare(results, [CHAPTER], names) == []


def test_a_moved_number_is_drift_and_is_located():
    results, names = outputs(["a 1.5, b 2.25\n"], ["a 1.5, b 2.26\n"])
    (found,) = compare(results, [CHAPTER], names)
    assert found.kind == "drift" and found.context == "a 1.5, b ⟦2.25⟧"
    assert found.values == {"v0": "2.25", "v1": "2.26"}


def test_a_mean_within_its_printed_spread_is_not_drift():
    results, names = outputs(["angle 13.6 ± 1.3°\n"], ["angle 13.7 ± 1.4°\n"])
    assert [d.kind for d in compare(results, [CHAPTER], names)] == ["spread", "spread"]


def test_a_mean_beyond_its_printed_spread_is_drift():
    results, names = outputs(["angle 13.6 ± 0.1°\n"], ["angle 14.6 ± 0.1°\n"])
    assert [d.kind for d in compare(results, [CHAPTER], names)] == ["drift"]


def test_rounding_level_numbers_are_kept_apart():
    results, names = outputs(["relative error 2.2e-16\n"], ["relative error 4.4e-16\n"])
    assert [d.kind for d in compare(results, [CHAPTER], names)] == ["rounding"]
    results, names = outputs(["value 2.2e-03\n"], ["value 4.4e-03\n"])  # not rounding level
    assert [d.kind for d in compare(results, [CHAPTER], names)] == ["drift"]


def test_changed_text_and_column_padding():
    results, names = outputs(["  -0.003 | x\n"], [" 0.000 | x\n"])  # padding only: a number moved
    assert [d.kind for d in compare(results, [CHAPTER], names)] == ["drift"]
    results, names = outputs(["converged after 3 steps\n"], ["diverged\n"])
    assert [d.kind for d in compare(results, [CHAPTER], names)] == ["text"]


def test_measurement_cells_are_not_compared():
    results, names = outputs([None, "x 1\n"], [None, "x 1\n"])
    assert [d.kind for d in compare(results, [CHAPTER], names)] == ["measurement"]


def test_numbers_are_read_as_printed():
    template, numbers = split_numbers("T_4 = 16.0, eps 1e-12, -2.5 and +3 for x2, nan")
    assert numbers == ["16.0", "1e-12", "-2.5", "+3", "nan"]  # "T_4" and "x2" are names, not numbers
    assert template == "T_4 = {}, eps {}, {} and {} for x2, {}"


def test_variants_that_would_crash_are_skipped_with_a_reason():
    import sys

    found = {v.name: v for v in variants(sys.executable)}
    expected = {"default", "haswell", "skylakex", "sandybridge", "prescott", "numpy-baseline", "avx2-machine"}
    assert expected <= set(found)
    assert found["default"].env == {} and not found["default"].skip
    skylake = found["skylakex"]
    if "avx512f" not in open("/proc/cpuinfo").read():
        assert skylake.skip and "avx512f" in skylake.skip
    # NumPy's own names, which it accepts (it warns about names it does not know)
    assert found["numpy-baseline"].env["NPY_DISABLE_CPU_FEATURES"]
