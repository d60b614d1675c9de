PY := .venv/bin/python
PIP := .venv/bin/pip

.PHONY: setup train test test-fast lint clean

# The venv is created once; torch is pinned first so that the CPU build on local disk is used
# and no open range can pull a multi-GB CUDA build. A CUDA build: make setup TORCH_INDEX=<the
# PyTorch wheel index for your CUDA version, e.g. https://download.pytorch.org/whl/cu128>.
TORCH_INDEX ?=
.venv/.installed: pyproject.toml
	test -d .venv || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q -e ".[dev,bench,onnx,pretrained,serve]"
	touch .venv/.installed

setup: .venv/.installed

train: .venv/.installed
	$(PY) train.py $(ARGS)

# Two pytest-xdist workers: most tests wait on a single-threaded subprocess start (torch, Lightning,
# transformers imports), so a serial run leaves one of two cores idle (25.5 vs 18.2 min here).
# TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test: .venv/.installed
	$(PYTEST) tests $(ARGS)

test-fast: .venv/.installed
	$(PYTEST) -m "not slow" tests $(ARGS)

lint: .venv/.installed
	.venv/bin/ruff check src tests bench train.py predict.py serve.py pretrain.py

clean:
	rm -rf logs outputs multirun data/generated data/cache
