# The two commands a newcomer needs: `make demo` and `make test`.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
export DWNET_VENV := $(abspath $(VENV))

.PHONY: install test demo gpu-wheels gpu-check

## install: create .venv with the pinned reference stack (no-op when current)
install:
	@bash tools/install_env.sh

## test: install if needed, then run the test suite in two processes
## (--dist loadfile: a file's tests share one process, so a module's
## fixtures, such as the quick demo's run, are built once)
test: install
	$(PYTHON) -m pytest tests -q -p no:cacheprovider -n 2 --dist loadfile

## demo: install if needed, then train/evaluate cls, det and seg on synthetic data
demo: install
	$(PYTHON) tools/demo.py

## gpu-wheels: download into .wheels/ what a GPU machine with PyTorch but
## no OpenMMLab packages needs to run `make gpu-check` offline
gpu-wheels:
	@bash tools/prepare_gpu_wheels.sh

## gpu-check: CUDA correctness and speed in one run (results/gpu_check/);
## GPU_CHECK_ARGS='--device cpu' for the quick CPU run of the same steps
gpu-check:
	@bash tools/gpu_check.sh $(GPU_CHECK_ARGS)
