# Two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test dist check clean

# The virtualenv holds the recipe's dependencies and the test tools, but
# not the recipe itself: the demo buildout develops it from src/ and the
# tests build a wheel from the checkout, so neither can pick up a stale
# installed copy.
$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet ".[test]"
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

clean:
	rm -rf $(VENV) bin parts develop-eggs .installed.cfg build dist
