# Two commands do everything on a fresh machine:
#   make pipeline   set up .venv, then download -> split -> train -> evaluate -> classify
#   make test       set up .venv (with the dev tools), then lint and run the tests
#
# Pass options to every pipeline step with ARGS, e.g. an offline try with random weights:
#   make pipeline ARGS="--sms-source path/to/sms_spam_collection.zip --weights random"

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: pipeline test test-portable lint benchmark notebooks notebooks-run clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# What the commands need, and nothing more (a CPU build of torch already there is kept).
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

# The test tools on top: pytest, ruff, transformers (the independent GPT-2), nbclient,
# httpx and selenium; and the serve extra (FastAPI, uvicorn), whose tests need it.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev,serve]"
	touch $@

pipeline: $(VENV)/.installed
	$(VENV)/bin/gpt-spam pipeline $(ARGS)

test: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

# The tests that compare two code paths (batched and single, fast and book, bf16 and fp32,
# several processes and one), on PyTorch's portable kernels, as a CPU without AVX2 runs
# them: their tolerances must hold on any x86-64 CPU, not only on this one's kernels.
test-portable: $(VENV)/.installed-dev
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest -q -m compares_paths

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

benchmark: $(VENV)/.installed
	$(PY) scripts/benchmark.py $(ARGS)

notebooks: $(VENV)/.installed
	$(PY) -m pip install --quiet jupyterlab
	$(VENV)/bin/jupyter lab notebooks/

# Run every notebook headless, offline from random weights, and save its outputs (and the
# hash of the code they came from), e.g. ARGS="--sms-source path/to/sms_spam_collection.zip".
notebooks-run: $(VENV)/.installed-dev
	$(PY) scripts/run_notebooks.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
