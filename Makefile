# The two commands of the README. Both do their own set-up on a fresh machine.
#   make demo   runs the demo against a real local model (provisioned once, then cached)
#   make test   runs the linters, the type checker and every test, the live ones included
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: demo test lint bench setup model llamastack clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

model: setup
	$(PY) -m tally_client.testing.llama provision

# Llama Stack (a real OpenAI Batch API server) in its own venv under ~/.cache/tally_client,
# so its pins do not fight ours; needs a Python >= 3.12 (found on PATH or pyenv's).
llamastack: setup
	$(PY) -m tally_client.testing.llamastack provision

demo: model
	$(PY) examples/demo.py

lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint model llamastack
	$(VENV)/bin/pytest

bench: setup
	$(PY) -m benchmarks
	$(PY) -m benchmarks.routing

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
