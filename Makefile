# The two commands of the README:
#   make book   build the site into _build/html (executing every notebook)
#   make test   lint, build the book, and run the whole test suite
# Both create a project-local virtual environment in .venv on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# A second environment with the oldest library versions the project supports (requirements-oldest.txt).
OLD    := .venv-oldest

# Small matrices: one BLAS thread is faster and keeps the printed numbers identical
# between the book build and the nbval re-run, whatever else the machine is doing.
export OPENBLAS_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: book pdf test lint unit notebooks repro oldest clean distclean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going

# The whole book as one PDF, printed by headless Chromium from the single-page
# HTML build (needs a Chromium: see the README).
pdf: book
	$(BIN)/python tools/make_pdf.py

lint: $(STAMP)
	$(BIN)/ruff check ce_lib tests tools

# Unit and property tests of ce_lib (no book build needed).
unit: $(STAMP)
	$(BIN)/python -m pytest tests

# The book's notebooks under nbval: each chapter is converted with jupytext and
# re-executed, and its outputs must equal the ones the book build printed.
notebooks: book
	$(BIN)/python tools/nbval_prepare.py --out _build/nbval
	$(BIN)/python -m pytest --nbval --nbval-current-env --nbval-sanitize-with tools/nbval_sanitize.cfg \
		-p no:cacheprovider _build/nbval

test: lint book pdf
	$(BIN)/python tools/nbval_prepare.py --out _build/nbval
	$(BIN)/python -m pytest tests _build/nbval --nbval --nbval-current-env \
		--nbval-sanitize-with tools/nbval_sanitize.cfg

# Every chapter under each OpenBLAS/NumPy kernel variant this CPU can run, two at a time;
# prints a chapter x variant table and every printed number that differs between variants
# (tools/repro.py). Not part of `make book`, which stays quick.
repro: $(STAMP)
	$(BIN)/python tools/repro.py

$(OLD)/.installed: requirements-oldest.txt pyproject.toml
	test -x $(OLD)/bin/python || $(PYTHON) -m venv $(OLD)
	$(OLD)/bin/python -m pip install --quiet --upgrade pip
	$(OLD)/bin/python -m pip install --quiet -r requirements-oldest.txt -e .
	touch $@

# The unit tests and every chapter (each assertion in it) with the oldest supported versions.
# The site, browser and PDF tests need the book build and run in the pinned environment only.
oldest: $(OLD)/.installed $(STAMP)
	$(OLD)/bin/python -m pytest tests -p no:cacheprovider \
		--ignore=tests/test_site.py --ignore=tests/test_built_files.py
	$(BIN)/python tools/repro.py --python $(OLD)/bin/python --variants default --out _build/repro-oldest

clean:
	rm -rf _build

distclean: clean
	rm -rf $(VENV) $(OLD)
