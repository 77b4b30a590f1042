# Two entry points do all set-up from a fresh clone: `make demo` and `make test`.
# Both build or refresh .venv/ from this checkout's own files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgeser-installed

.PHONY: venv demo test lint bench clean web-deps arm-env

venv: $(STAMP)

# torch is installed first, pinned to the CPU wheel, so that nothing later can
# resolve it to a CUDA build.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgeser demo --out runs/demo

# The browser page's JavaScript dependencies (onnxruntime-web, and playwright-core for the
# browser tests) from web/package-lock.json; skipped with a note where npm is missing.
web-deps:
	@if command -v npm > /dev/null; then \
	  test web/node_modules/.package-lock.json -nt web/package-lock.json || \
	  npm ci --prefix web --ignore-scripts --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the browser page and its tests need Node.js and npm"; fi

test: $(STAMP) web-deps
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/mkdocs build --strict --site-dir $(VENV)/site
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools

# An aarch64 Python with edgeser's runtime under qemu (tools/arm64.py; the tests build it
# themselves when qemu-user-static and debootstrap are installed).
arm-env: $(STAMP)
	$(BIN)/python tools/arm64.py build

clean:
	rm -rf $(VENV) runs .pytest_cache web/node_modules .arm64
