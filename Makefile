# The two commands a newcomer needs: `make demo` and `make test`.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
export DWNET_VENV := $(abspath $(VENV))

.PHONY: install test demo

## install: create .venv with the pinned reference stack (no-op when current)
install:
	@bash tools/install_env.sh

## test: install if needed, then run the test suite
test: install
	$(PYTHON) -m pytest tests -q -p no:cacheprovider

## demo: install if needed, then train/evaluate cls, det and seg on synthetic data
demo: install
	$(PYTHON) tools/demo.py
