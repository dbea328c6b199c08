# keras-admm: `make demo` runs the end-to-end LeNet-5 pipeline, `make test` the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-jax test-torch lint bench bench-profile bench-compact fuzz compare compare-quick wheel clean

venv: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,examples,tfmot,jax,litert,openvino]"
	touch $(STAMP)

demo: venv
	$(PY) examples/lenet5_mnist.py

LINT_DIRS := $(wildcard keras_admm tools examples tests)

lint: venv
	$(PY) -m ruff check $(LINT_DIRS)
	$(PY) -m ruff format --check $(LINT_DIRS)

# The tests that hold on every Keras backend; the tensorflow pass runs them all
# (and tests/test_backends.py compares the backends' numbers side by side).
BACKEND_TESTS := tests/test_sparsity.py tests/test_plan.py tests/test_registry.py \
	tests/graph tests/pruning tests/training tests/compaction
# pip takes the CPU build of torch 2.13 from this machine's disk; elsewhere use
# e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu".
TORCH_SPEC ?= torch>=2.2,<2.14

# make test's jax pass: the backend tests except the pure-Python graph and plan logic
# (tests/graph, test_plan, test_registry: make test-jax and test-torch run them),
# and the profiler's keras engine (its fixture exports ONNX, which torch can't).
JAX_TESTS := tests/test_sparsity.py tests/pruning tests/training tests/compaction \
	tests/profiling/test_profiling.py::test_keras_engine_times_keras_files_on_the_active_backend

# The tensorflow tests that run whole scripts in subprocesses (examples, tools)
# make a pass of their own.
TF_SCRIPT_TESTS := tests/examples tests/tools

# Three passes run side by side, so that the 2 cores stay busy to the end (about
# 20 CPU-minutes in all; on a fresh clone here, with ../shared present, 670 s
# for lint and the three passes, against 806 s with two). The jax pass and the
# tensorflow script pass write their own logs, printed after the main pass.
test: lint
	@rm -rf .pytest-jax .pytest-scripts; mkdir -p .pytest-jax .pytest-scripts; \
	KERAS_BACKEND=jax $(PY) -m pytest -q -p no:cacheprovider \
		--basetemp=.pytest-jax/tmp $(JAX_TESTS) > .pytest-jax/log 2>&1 & jax=$$!; \
	$(PY) -m pytest -q -p no:cacheprovider --durations=8 \
		--basetemp=.pytest-scripts/tmp $(TF_SCRIPT_TESTS) > .pytest-scripts/log 2>&1 & scripts=$$!; \
	$(PY) -m pytest -q --durations=8 $(addprefix --ignore=,$(TF_SCRIPT_TESTS)) tests; tf=$$?; \
	wait $$scripts; sc=$$?; wait $$jax; jx=$$?; \
	echo "--- the tensorflow script pass ($(TF_SCRIPT_TESTS)) ---"; \
	cat .pytest-scripts/log; \
	echo "--- the jax pass (KERAS_BACKEND=jax) ---"; \
	cat .pytest-jax/log; \
	echo "tensorflow pass: exit $$tf; tensorflow script pass: exit $$sc; jax pass: exit $$jx"; \
	test $$tf -eq 0 && test $$sc -eq 0 && test $$jx -eq 0

test-jax: venv
	KERAS_BACKEND=jax $(PY) -m pytest -q $(BACKEND_TESTS) \
		tests/profiling/test_profiling.py::test_keras_engine_times_keras_files_on_the_active_backend

test-torch: venv
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	KERAS_BACKEND=torch $(PY) -m pytest -q $(BACKEND_TESTS)

bench: venv
	$(PY) tools/bench_overhead.py --steps 100 --warmup 10 --output_dir docs/bench

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
