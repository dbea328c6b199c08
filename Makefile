# keras-admm: `make demo` runs the end-to-end LeNet-5 pipeline, `make test` the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench bench-profile bench-compact fuzz compare compare-quick wheel clean

venv: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,examples,tfmot]"
	touch $(STAMP)

demo: venv
	$(PY) examples/lenet5_mnist.py

LINT_DIRS := $(wildcard keras_admm tools examples tests)

lint: venv
	$(PY) -m ruff check $(LINT_DIRS)
	$(PY) -m ruff format --check $(LINT_DIRS)

test: lint
	$(PY) -m pytest -q tests

bench: venv
	$(PY) tools/bench_overhead.py --output_dir docs/bench

bench-profile: venv
	$(PY) tools/bench_profile.py --output_dir docs/perf

bench-compact: venv
	$(PY) tools/bench_compact.py

fuzz: venv
	$(PY) tools/fuzz_compact.py --num_graphs 200

compare: venv
	$(PY) tools/compare.py --output_dir runs/compare/full

compare-quick: venv
	$(PY) tools/compare.py --quick

wheel: venv
	$(PY) -m pip install --quiet build
	$(PY) -m build --no-isolation --sdist --wheel --outdir dist .

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
