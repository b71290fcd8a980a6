# The two set-up commands of the README: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow lint bench install serve-env test-serve

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, from the pinned CPU build; everything else under a constraint that holds it there.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[eval,data,cluster,onnx,hf,dev]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/neobert demo

test: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m pytest

# The tests marked slow (the default run skips them): FSDP and torch.compile in the loop, the offline
# suite, the real demo corpus, the W&B sink. They fetch the demo archives on first use.
test-slow: $(VENV)/.installed
	$(BIN)/python -m pytest -m slow

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# Infinity, an existing embedding server, in its own environment (its pins do not fit .venv; see
# constraints-serve.txt): what tests/integration/test_serve_infinity.py and benchmarks/peers/serve_load.py start.
SERVE_VENV := .venv-serve

$(SERVE_VENV)/.installed: constraints-serve.txt
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install -q --upgrade pip
	$(SERVE_VENV)/bin/pip install -q torch==2.13.0
	$(SERVE_VENV)/bin/pip install -q -c constraints-serve.txt "infinity-emb[server]==0.0.78" sentence-transformers transformers
	touch $@

serve-env: $(SERVE_VENV)/.installed

test-serve: $(VENV)/.installed $(SERVE_VENV)/.installed
	$(BIN)/python -m pytest -m slow tests/integration/test_serve_infinity.py

# Every speed comparison against a peer (benchmarks/peers/): BERT and ModernBERT, the official data route,
# SentenceTransformer, Infinity (hence the serving environment). The GPU check (benchmarks/gpu/) and the
# studies behind the docs' figures (benchmarks/studies/) are run by hand, as their docs say.
bench: $(VENV)/.installed $(SERVE_VENV)/.installed
	$(BIN)/python benchmarks/peers/model_forward.py
	$(BIN)/python benchmarks/peers/train_step.py
	$(BIN)/python benchmarks/peers/prepare_throughput.py
	$(BIN)/python benchmarks/peers/encode_throughput.py
	$(BIN)/python benchmarks/peers/serve_load.py
