# eco: create the virtual environment, run the tests, the demo and the benchmarks.
# Every target that runs Python creates .venv first (make venv), so a fresh clone
# needs only `make test` or `make demo`.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# Written after a successful install; anything it depends on re-runs the install.
STAMP  := $(VENV)/.eco-installed
# The compiled CP engine: editing it re-runs the editable install, which recompiles it.
EXT_SOURCES := $(wildcard src/eco/*.pyx src/eco/*.pxd)
# Build requirements of pyproject.toml ([build-system] requires), installed into
# .venv so that the extension is compiled against the very NumPy and SciPy it runs
# with (setup.py reads SciPy's BLAS integer type) and recompiles without a
# throwaway build environment: hence --no-build-isolation below.
BUILD_REQS := "setuptools>=77" wheel "Cython>=3.0.8" "numpy>=2.0" "scipy>=1.11"

PYTEST_FLAGS ?= -q -p no:cacheprovider

.PHONY: venv test demo bench clean distclean

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml setup.py constraints.txt $(EXT_SOURCES) | $(BIN)/python
	$(PIP) install --upgrade pip
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt $(BUILD_REQS)
	$(PIP) install -c constraints.txt --no-build-isolation -e ".[torch,test,ray]"
	touch $@

test: venv
	$(BIN)/python -m pytest $(PYTEST_FLAGS)

demo: venv
	$(BIN)/eco experiment $(ARGS)

# The suites, then the scaling sweep (n <= ECO_BENCH_MAX_N, default 20000) with its
# plot and table in benchmarks/results/ (the sweep's pytest twin is not run twice).
bench: venv
	$(BIN)/python -m pytest benchmarks --benchmark-only $(PYTEST_FLAGS) \
		--ignore=benchmarks/test_bench_scaling.py
	$(BIN)/python benchmarks/scaling.py

# Build products and caches; the next target that needs .venv reinstalls eco into it.
clean:
	rm -rf build dist src/*.egg-info .pytest_cache .hypothesis .benchmarks
	rm -f src/eco/*.so src/eco/_cp_core.c src/eco/_blas_int.pxi $(STAMP)
	find . \( -name $(VENV) -o -name .git \) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Also the virtual environment.
distclean: clean
	rm -rf $(VENV)
