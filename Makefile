# One command to set up and run each main job.  Everything goes into .venv.
#   make demo   set up, train a small model on Tiny Shakespeare for 300 steps, export it, sample from it
#   make check  set up, lint, run the fast tier: every test not marked slow (about a minute on 2 cores)
#   make test   set up, lint, run the whole test suite (Python, then the JavaScript runtime's and the browser
#               page's), as CI does, and list the slowest tests
#   make web    serve the browser demo at http://127.0.0.1:8000/clients/web/
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORPUS ?= tinyshakespeare
RUN ?= runs/demo
DEMO_STEPS ?= 300
# Torch and onnxruntime threads of `make demo` (empty: every core).
THREADS ?=
threads_option = $(if $(THREADS),--threads $(THREADS))

.PHONY: setup demo check test lint js-test web clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# PyTorch first, from TORCH_INDEX (PyTorch's CPU wheels by default): a bare `torch` requirement resolves to a
# multi-GB CUDA build on most machines.  Another build: make setup TORCH_INDEX=https://download.pytorch.org/whl/cu126.
# Where the index cannot be reached, pip's own configuration (its index, find-links) is tried instead.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_VERSION ?= 2.13.0
# pip's retries and warnings on an unreachable index go to a log; one line says the fallback was taken.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --timeout 15 --retries 0 --index-url $(TORCH_INDEX) torch==$(TORCH_VERSION) \
	    2>$(VENV)/torch-index.log \
	  || { echo "PyTorch's index ($(TORCH_INDEX)) did not answer (details: $(VENV)/torch-index.log);" \
	            "installing torch==$(TORCH_VERSION) from pip's own index"; \
	       $(BIN)/pip install --quiet torch==$(TORCH_VERSION); }
	$(BIN)/pip install --quiet -e '.[train,plot,serve,dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	mkdir -p $(dir $(RUN))
	$(BIN)/vrnn-train $(CORPUS) -o $(RUN).pt --hidden-size 256 --steps $(DEMO_STEPS) --eval-every 100 \
	  --val-chars 20000 --force $(threads_option)
	$(BIN)/vrnn-export $(RUN).pt $(RUN).onnx
	$(BIN)/vrnn-run $(RUN).onnx --length 500 --temperature 0.8 --seed 1 $(threads_option)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The fast tier for everyday work: no real training, browser, load test, packaging or nginx run.
check: lint
	$(BIN)/python -m pytest -m "not slow" -q

# Everything, as CI runs it; the 15 slowest tests are listed at the end, so that the suite's time is watched.
test: lint
	$(BIN)/python -m pytest --durations=15
	$(MAKE) js-test

# The JavaScript runtime against the conformance fixtures (Node's own test runner; --ignore-scripts:
# onnxruntime-node's install script downloads GPU binaries, which the CPU tests do not need).
js-test: clients/js/node_modules/.package-lock.json
	cd clients/js && node --test test/

clients/js/node_modules/.package-lock.json: clients/js/package-lock.json
	cd clients/js && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

# The browser demo: http://127.0.0.1:8000/clients/web/ (onnxruntime-web from clients/js/node_modules).
web: clients/js/node_modules/.package-lock.json
	node clients/web/serve.mjs 8000

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache clients/js/node_modules
