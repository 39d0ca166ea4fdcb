# Two commands for a newcomer on a fresh machine:
#   make quickstart   train a small binary ViT on Fashion-MNIST, export, verify, benchmark
#   make test         run the test suite
# Both create .venv and install what they need (Python 3.10-3.12 as $(PYTHON)).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: quickstart test install data clean help

help:
	@echo "make quickstart  - train, export, verify and benchmark a small binary ViT (about 17 min)"
	@echo "make test        - run the tests"
	@echo "make install     - create $(VENV) and install edgebvit with its pinned stack"

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 10) <= v <= (3, 12) else "edgebvit needs Python 3.10-3.12 (TensorFlow 2.16); set PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Debian ships the full Fashion-MNIST as a package; nothing is downloaded at run time.
data:
	@test -f $(FASHION_MNIST) || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist' (or pass --data-dir)"; exit 1; fi; }

quickstart: $(STAMP) data
	$(PY) tools/quickstart.py

test: $(STAMP) data
	$(PY) tools/lint_imports.py
	$(PY) -m pytest -q

clean:
	rm -rf runs .pytest_cache
