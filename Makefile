# Two commands on a fresh checkout: `make demo` and `make test`.
# Only python3 (>= 3.11) and make are assumed; everything else lands in .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck docs docs-serve faults bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "shigoto needs Python >= 3.11; found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shigoto demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

test: lint typecheck
	$(BIN)/pytest -q -m "not faults"

# The docs site (mkdocs + material + mkdocstrings) into build/site; warnings fail it.
# tests/e2e/test_docs_site.py builds it too, so `make test` catches a broken page.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

faults: $(STAMP)
	$(BIN)/pytest -q -m faults

bench: $(STAMP)
	$(BIN)/python bench/throughput.py --url sqlite:///$$(mktemp -d)/bench.db
	test -x bench/.venv-peers/bin/python || $(PYTHON) -m venv bench/.venv-peers
	bench/.venv-peers/bin/pip install --quiet -e '.[redis,amqp]' -r bench/requirements-peers.txt
	bench/.venv-peers/bin/python bench/compare.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build/site
