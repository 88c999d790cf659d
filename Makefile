# mcal_jax: `make test` and `make demo` work on a fresh machine (Python >= 3.11).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_WORKDIR ?= workdirs/demo
FASHION_FOLDER ?= workdirs/fashion_folder
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: install data test lint typecheck check demo fashion-folder bench gpu-check clean \
	labelstudio test-labelstudio

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Real Fashion-MNIST: Debian's package when apt is usable; otherwise the library falls
# back to TFDS (`tfds:fashion_mnist`), which downloads it on first use.
data:
	@if [ -d $(FASHION_MNIST_DIR) ]; then \
	  echo "Fashion-MNIST: $(FASHION_MNIST_DIR)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
	    || echo "apt-get failed: Fashion-MNIST will come from TFDS"; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	  (sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist) \
	    || echo "apt-get failed: Fashion-MNIST will come from TFDS"; \
	else \
	  echo "apt not usable: Fashion-MNIST will come from TFDS"; \
	fi

# Two workers (pytest-xdist), each test file on one of them: a third less wall time on
# 2 cores, since most tests compile or run one thread at a time. The files go out in the
# order tests/conftest.py gives them (the slowest first, so the workers end together).
# PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2
test: install data
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15 tests

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

# What CI runs: lint, types, then the test suite.
check: lint typecheck test

# Label Studio, the server people label in (labeling.service=labelstudio:URL), in a
# virtualenv of its own: it pins its own dependencies (numpy among them), which must not
# replace the JAX environment's. mcal_jax talks to it over HTTP and needs none of them.
LS_VENV ?= .venv-labelstudio
labelstudio: $(LS_VENV)/.installed

$(LS_VENV)/.installed:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install --quiet --disable-pip-version-check --no-compile \
	  'label-studio>=1.20,<2'
	touch $@

# The end-to-end test against a real Label Studio server alone (`make test` skips it unless
# LABEL_STUDIO_BIN names the server, as .ci/run does).
test-labelstudio: install labelstudio
	LABEL_STUDIO_BIN=$(LS_VENV)/bin/label-studio MCAL_REQUIRE_LABEL_STUDIO=1 \
	  $(PY) -m pytest -q tests/test_label_studio.py

demo: install data
	$(PY) -m launch.mcal --config=configs/fashion_mnist.py:cpu --workdir=$(DEMO_WORKDIR)

# A folder of 3,000 real Fashion-MNIST PNGs to label with people (README, "Label your own
# images"); their ground truth goes apart, to truth.csv, for the script that plays the people.
fashion-folder: install data
	$(PY) -m examples.fashion_folder --out=$(FASHION_FOLDER) --count=3000

bench: install
	$(PY) -m benchmarks.core

# Every GPU measurement in one command, on a GPU machine that may have no network and no
# virtualenv: the virtualenv's Python if there is one, else $(PYTHON) as it is (BUILD.md,
# "The GPU check").
GPU_CHECK_OUT ?= gpu-check
GPU_CHECK_PYTHON ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-check:
	$(GPU_CHECK_PYTHON) -m benchmarks.gpu_check --out_dir=$(GPU_CHECK_OUT)

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache .ruff_cache .mypy_cache
