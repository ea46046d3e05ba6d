# Two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
PYTEST_ARGS ?=
# More requirements resolved together with the recipe's, e.g. the
# zc.buildout under test: PIP_EXTRA="zc.buildout~=5.0"
# (tox.ini's buildoutN factors).  A venv is made once: use a new VENV.
PIP_EXTRA ?=

.PHONY: run test dist check clean

# The virtualenv holds the recipe's dependencies and the test tools, but
# not the recipe itself: the demo buildout develops it from src/ and the
# tests build a wheel from the checkout, so neither can pick up a stale
# installed copy.
$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet ".[test]" $(PIP_EXTRA)
	$(BIN)/python -m pip uninstall --quiet --yes plone.recipe.zope2zeoserver
	touch $@

# Demo: a ZEO server on 127.0.0.1:8100 in the foreground; Ctrl-C stops it.
run: $(VENV)/.installed
	$(BIN)/buildout -N
	bin/zeo fg

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Wheel and sdist, checked the way the package index renders them.
dist: $(VENV)/.installed
	rm -rf dist build
	$(BIN)/python -m pip install --quiet build twine
	$(BIN)/python -m build --no-isolation --outdir dist .
	$(BIN)/python -m twine check --strict dist/*

# Benchmark against plone.recipe.zeoserver and plain ZEO (bench/run.py);
# prints one table of medians, ratios and targets.  bench-smoke runs each
# measurement once on small data, to keep the benchmark working (CI).
.PHONY: bench bench-smoke
BENCH_ARGS ?=

bench: $(VENV)/.installed
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-smoke: $(VENV)/.installed
	$(BIN)/python bench/run.py --quick

# Replication lag of a ZRS primary and secondary under a steady commit
# load (median, p90, p99), about 30 s.
.PHONY: bench-replication
bench-replication: $(VENV)/.installed
	$(BIN)/python bench/replication.py

clean:
	rm -rf $(VENV) bin parts develop-eggs .installed.cfg build dist
