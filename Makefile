# One command to set up and run each main job.  Everything goes into .venv.
#   make demo   set up, train a short model on Tiny Shakespeare, export it, sample from it
#   make test   set up, lint, run the test suite (Python, then the JavaScript runtime's and the browser page's)
#   make web    serve the browser demo at http://127.0.0.1:8000/clients/web/
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORPUS ?= tinyshakespeare
RUN ?= runs/demo
DEMO_STEPS ?= 300

.PHONY: setup demo test lint js-test web clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch==2.13.0 first: it is a CPU build on this machine's local disk, while a bare
# `torch` requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[train,plot,dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	mkdir -p $(dir $(RUN))
	$(BIN)/vrnn-train $(CORPUS) -o $(RUN).pt --steps $(DEMO_STEPS) --eval-every 100 --force
	$(BIN)/vrnn-export $(RUN).pt $(RUN).onnx
	$(BIN)/vrnn-run $(RUN).onnx --length 500 --temperature 0.8 --seed 1

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest
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
