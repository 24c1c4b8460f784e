# Developer entry points. On a fresh clone:  make demo   |   make test
#
# The venv is created on first use and the project is (re)installed into it only when
# pyproject.toml changed since the last install (stamp: .venv/.installed).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: all demo test validate bench docs clean distclean install

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

## demo: two demo upstreams + a gateway on 127.0.0.1:8080 (admin :9901); Ctrl-C stops all
demo: $(STAMP)
	$(BIN)/python examples/run_demo.py

## test: the whole suite, unit and end-to-end
test: $(STAMP)
	$(BIN)/pytest tests

## validate: check the example config the way the gateway would load it
validate: $(STAMP)
	$(BIN)/meshgate validate examples/

## bench: requests per proxy CPU-second against peers (see bench/)
bench: $(STAMP)
	$(BIN)/python bench/run.py

## docs: regenerate docs/kinds/ from the config models
docs: $(STAMP)
	$(BIN)/python -m meshgate.docs_gen docs/

## clean: caches and build output (keeps the venv; `make distclean` removes it too)
clean:
	rm -rf build dist .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
