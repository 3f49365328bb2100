"""The pruned ``ce_lib`` of a question's jail (``ce_grader.jail_library``).

Each pruned package is written to a temporary directory and imported in a fresh
``python -I -S`` whose ``sys.path`` is that directory and NumPy's, as in the
jail: the allowed functions must give exactly the real results, and nothing
else (no other public name, no forbidden definition, no unneeded module) may
be there.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import ce_lib
from ce_grader import jail_library
from ce_grader.jail_library import library_for

REAL_FILES = sorted(p.name for p in Path(ce_lib.__file__).parent.glob("*.py"))
REAL_MODULES = sorted(name.removesuffix(".py") for name in REAL_FILES if name != "__init__.py")

SETUP = """
rng = np.random.default_rng(0)
z = rng.normal(size=(4, 5))
y = rng.integers(0, 5, size=4)
p = rng.dirichlet(np.ones(5), size=4)
big = 800.0 * z
"""

CANON = """
def canon(value):
    if isinstance(value, np.generic | np.ndarray):
        value = np.asarray(value)
        return [value.dtype.str, list(value.shape), value.tobytes().hex()]
    return repr(value)
"""

CALLS = {
    "cross_entropy": [
        "ce.cross_entropy(z, y)",
        "ce.cross_entropy(z, p, label_smoothing=0.1, reduction='none')",
        "ce.cross_entropy(big.astype(np.float32), y, reduction='sum')",
    ],
    "log_softmax": ["ce.log_softmax(big)", "ce.log_softmax(z.astype(np.float32), axis=0)"],
    "logsumexp": ["ce.logsumexp(big)", "ce.logsumexp(z, axis=0, keepdims=True)"],
    "softplus": ["ce.softplus(big)", "ce.softplus(z.astype(np.float32))"],
    "gradcheck": ["ce.gradcheck(lambda x: float(np.sum(x ** 3)), z, lambda x: 3 * x ** 2)"],
    "mse_loss": ["ce.mse_loss(z, p)", "ce.mse_loss(z, p, reduction='none')"],
    "sigmoid": ["ce.sigmoid(z)", "ce.sigmoid(big.astype(np.float32))"],
    "softmax": ["ce.softmax(z)", "ce.softmax(big, axis=0)", "ce.softmax(z.astype(np.float32))"],
    "softmax_jacobian": ["ce.softmax_jacobian(z[0])"],
}

# (allow, forbid, the modules of the pruned package, the public names other than the
# allowed ones that it defines because an allowed one needs them: a student can reach
# those through __globals__, so they must not be forbidden).
CASES = [
    ([], [], [], []),
    (["ce_lib.sigmoid"], [], ["_validation", "functional"], []),
    (["ce_lib.softmax"], ["ce_lib.softmax_jacobian"], ["_validation", "functional"], []),
    (
        ["ce_lib.softmax", "ce_lib.cross_entropy", "ce_lib.gradcheck"],
        ["ce_lib.cross_entropy_grad"],
        ["_fastpath", "_validation", "categorical", "functional", "gradcheck"],
        ["GradcheckResult", "log_softmax", "numerical_gradient", "relative_error"],
    ),
    (
        ["ce_lib.sigmoid", "ce_lib.gradcheck", "ce_lib.mse_loss"],
        ["ce_lib.mse_loss_grad"],
        ["_validation", "functional", "gradcheck", "squared"],
        ["GradcheckResult", "numerical_gradient", "relative_error"],
    ),
    (
        ["ce_lib.cross_entropy"],
        ["ce_lib.numerical_gradient", "ce_lib.gradcheck"],
        ["_fastpath", "_validation", "categorical", "functional"],
        ["log_softmax"],
    ),
]


def short(names):
    return sorted(name.removeprefix("ce_lib.") for name in names)


def run_pruned(files: dict[str, str], tmp_path: Path, calls: list[str], attributes: list[str]) -> dict:
    """Import the pruned package in a fresh interpreter; evaluate ``calls``, probe ``attributes``."""
    (tmp_path / "ce_lib").mkdir()
    for name, text in files.items():
        (tmp_path / "ce_lib" / name).write_text(text, encoding="utf-8")
    script = f"""
import importlib, json, sys
sys.path[:0] = [{str(tmp_path)!r}, {str(Path(np.__file__).parents[1])!r}]
import numpy as np
import ce_lib as ce
{SETUP}
{CANON}
def attribute(name):
    try:
        getattr(ce, name)
    except AttributeError:
        return "AttributeError"
    return "present"
def module(name):
    try:
        importlib.import_module("ce_lib." + name)
    except ModuleNotFoundError:
        return "ModuleNotFoundError"
    return "present"
print(json.dumps({{
    "file": ce.__file__,
    "dir": [n for n in dir(ce) if not (n.startswith("__") and n.endswith("__"))],
    "results": {{call: canon(eval(call)) for call in {calls!r}}},
    "attributes": {{name: attribute(name) for name in {attributes!r}}},
    "modules": {{name: module(name) for name in {REAL_MODULES!r}}},
}}))
"""
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["file"] == str(tmp_path / "ce_lib" / "__init__.py")
    return out


def real_results(calls: list[str]) -> dict:
    namespace = {"np": np, "ce": ce_lib}
    exec(SETUP + CANON, namespace)
    return {call: eval(f"canon({call})", namespace) for call in calls}


def definitions(files: dict[str, str]) -> dict[str, set[str]]:
    """File -> every name a def, class, assignment or import binds in it, at any depth."""
    found = {}
    for filename, text in files.items():
        names = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name)
        found[filename] = names
    return found


@pytest.mark.parametrize(("allow", "forbid", "modules", "pulled"), CASES)
def test_pruned_package_has_exactly_the_allowed_functions(allow, forbid, modules, pulled, tmp_path):
    files = library_for(allow, forbid)
    assert sorted(files) == sorted(["__init__.py"] + [m + ".py" for m in modules])
    top_level = {
        node.name
        for name, text in files.items()
        for node in ast.parse(text).body
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and name != "__init__.py"
    }
    assert sorted((top_level & set(ce_lib.__all__)) - set(short(allow))) == pulled
    for filename, names in definitions(files).items():
        for name in short(forbid):
            assert name not in names, f"{filename} binds the forbidden {name}"
            assert not re.search(rf"\bdef\s+{name}\b", files[filename]), filename

    calls = [call for name in short(allow) for call in CALLS[name]]
    out = run_pruned(files, tmp_path, calls, short(forbid))
    assert out["dir"] == short(allow)
    assert out["results"] == real_results(calls)
    assert set(out["attributes"].values()) <= {"AttributeError"}
    absent = {m: "ModuleNotFoundError" for m in REAL_MODULES if m not in modules}
    assert out["modules"] == {m: absent.get(m, "present") for m in REAL_MODULES}


def homework_questions() -> list[tuple[str, list[str] | None, list[str]]]:
    """(assignment and question, allow, forbid) of every question of homework/hw*.md."""
    found = []
    for path in sorted((Path(__file__).parents[1] / "homework").glob("hw*.md")):
        text = path.read_text(encoding="utf-8")
        for header in re.findall(r"^```\{code-cell\}[^\n]*\n---\n(.*?)\n---\n", text, re.M | re.S):
            meta = (yaml.safe_load(header) or {}).get("homework") or {}
            if "forbid" in meta or "allow" in meta:
                found.append((f"{path.stem} {meta['question']}", meta.get("allow"), meta.get("forbid", [])))
    return found


@pytest.mark.parametrize(("question", "allow", "forbid"), homework_questions())
def test_every_homework_question_gets_a_working_package(question, allow, forbid, tmp_path):
    files = library_for(allow, forbid)
    calls = [call for name in short(allow or []) for call in CALLS.get(name, [])]
    out = run_pruned(files, tmp_path, calls, short(forbid))
    if allow is not None:
        assert out["dir"] == short(allow), question
    assert out["results"] == real_results(calls), question
    assert set(out["attributes"].values()) <= {"AttributeError"}, question


def test_homework_questions_are_found():
    assert len(homework_questions()) >= 10


def test_kept_statements_keep_their_comments():
    source = (Path(ce_lib.__file__).parent / "_fastpath.py").read_text(encoding="utf-8")
    statement = source.index("_BLOCK_BYTES = ")
    block = source[source.rindex("\n\n", 0, statement) + 2 : source.index("\n", statement)]
    assert block.startswith("# ") and block.count("\n# ") == 1  # two comment lines, then the constant
    assert block in library_for(["ce_lib.cross_entropy"], [])["_fastpath.py"]


def test_empty_allow_list_gives_an_importable_package_without_functions(tmp_path):
    files = library_for([], ["ce_lib.softmax"])
    assert list(files) == ["__init__.py"]
    assert ce_lib.__doc__.strip() in files["__init__.py"]
    assert run_pruned(files, tmp_path, [], [])["dir"] == []


def test_allowed_function_that_needs_a_forbidden_one_is_an_assignment_error():
    with pytest.raises(ValueError) as error:
        library_for(["ce_lib.cross_entropy"], ["ce_lib.log_softmax"])
    assert str(error.value) == (
        "ce_lib.cross_entropy is allowed in this question but needs the forbidden ce_lib.log_softmax "
        "(through ce_lib.categorical.cross_entropy -> ce_lib.categorical._reference_cross_entropy "
        "-> ce_lib.functional.log_softmax); remove it from allow or from forbid"
    )
    with pytest.raises(
        ValueError,
        match=r"ce_lib.arcface_loss .* forbidden ce_lib.cross_entropy \(through "
        r"ce_lib.margins.arcface_loss -> ce_lib.categorical.cross_entropy\)",
    ):
        library_for(["ce_lib.softmax", "ce_lib.arcface_loss"], ["ce_lib.cross_entropy"])
    with pytest.raises(ValueError, match=r"ce_lib\.gradcheck .* forbidden ce_lib\.numerical_gradient"):
        library_for(["ce_lib.gradcheck"], ["ce_lib.numerical_gradient"])
    with pytest.raises(ValueError, match=r"ce_lib\.softmax is both allowed and forbidden"):
        library_for(["ce_lib.softmax"], ["ce_lib.softmax"])


@pytest.mark.parametrize(
    "entry",
    [
        "softmax",
        "ce_lib.functional.softmax",
        "ce_lib.shift_by_max",
        "ce_lib._fastpath",
        "ce_lib.nope",
        "ce_lib.__version__",
        "ce_lib.losses",
        "numpy.exp",
    ],
)
@pytest.mark.parametrize("role", ["allow", "forbid"])
def test_entries_must_be_public_functions_or_classes(entry, role):
    args = ([entry], []) if role == "allow" else (None, [entry])
    with pytest.raises(ValueError, match=f"{role} entry {re.escape(repr(entry))} is not a public"):
        library_for(*args)


def test_whole_library_without_forbidden_names_is_the_real_library():
    root = Path(ce_lib.__file__).parent
    assert library_for(None, []) == {name: (root / name).read_text(encoding="utf-8") for name in REAL_FILES}


def test_whole_library_minus_forbidden_names(tmp_path):
    forbid = ["ce_lib.cross_entropy_grad", "ce_lib.softmax_jacobian"]
    files = library_for(None, forbid)
    for filename, names in definitions(files).items():
        assert not names & {"cross_entropy_grad", "softmax_jacobian"}, filename
    # What needs a forbidden function goes too: the gradients of the cosine-margin losses call it.
    kept = set(ce_lib.__all__) - {"cross_entropy_grad", "softmax_jacobian"}
    kept -= {"am_softmax_loss_grad", "arcface_loss_grad"}
    calls = CALLS["softmax"] + CALLS["cross_entropy"] + CALLS["mse_loss"]
    out = run_pruned(files, tmp_path, calls, [*short(forbid), "arcface_loss_grad", "arcface_loss"])
    assert out["dir"] == sorted(kept)
    assert out["results"] == real_results(calls)
    assert out["attributes"] == {
        "cross_entropy_grad": "AttributeError",
        "softmax_jacobian": "AttributeError",
        "arcface_loss_grad": "AttributeError",
        "arcface_loss": "present",
    }


def test_output_is_deterministic_cached_and_computed_once_across_threads(monkeypatch):
    jail_library._library_files.cache_clear()
    write_init = jail_library._write_init

    def slow_write_init(*args):  # long enough for every thread to arrive while the first computes
        time.sleep(0.2)
        return write_init(*args)

    monkeypatch.setattr(jail_library, "_write_init", slow_write_init)
    orders = [
        ["ce_lib.softmax", "ce_lib.gradcheck"],
        ["ce_lib.gradcheck", "ce_lib.softmax", "ce_lib.softmax"],
    ]
    results = [None] * 8

    def work(i):
        results[i] = library_for(orders[i % 2], ["ce_lib.logsumexp"] * (1 + i % 2))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result == results[0] for result in results)
    assert list(results[0]) == sorted(results[0])
    assert jail_library._library_files.cache_info().misses == 1
    results[0]["__init__.py"] = "import os"
    assert library_for(orders[0], ["ce_lib.logsumexp"]) == results[1]


@pytest.mark.parametrize(
    "source",
    [
        "if True:\n    x = 1\n",
        "from . import functional\n",
        "import ce_lib.functional\n",
        "x = 1; y = 2\n",
        "X = {}\nX['a'] = 1\n",
        "print('side effect')\n",
    ],
)
def test_library_layouts_that_cannot_be_pruned_safely_are_refused(source):
    module = jail_library._Module("probe", source, ast.parse(source))
    with pytest.raises(RuntimeError, match=r"^ce_lib/probe\.py line \d+: "):
        jail_library._index(module)


@pytest.mark.parametrize(
    ("future", "needed"),
    [("", {"deco", "LIMIT", "Box"}), ("from __future__ import annotations\n", {"deco", "LIMIT"})],
)
def test_references_include_decorators_defaults_and_evaluated_annotations(future, needed):
    source = future + (
        "import numpy as np\nLIMIT = 3\nUNUSED = 4\n\ndef deco(f):\n    return f\n\nclass Box:\n    pass\n\n"
        "@deco\ndef f(x: Box = LIMIT) -> Box:\n    y = np.exp(x)\n    return y\n"
    )
    module = jail_library._index(jail_library._Module("probe", source, ast.parse(source)))
    assert jail_library._references(module, module.defines["f"][0]) & set(module.defines) == needed
