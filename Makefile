# Two commands: `make run` (set up, then the main job) and `make test` (set up, then the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	scripts/ensure-java.sh
	scripts/ensure-azurite.sh
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/ppml demo

test: $(STAMP)
	scripts/ensure-helm.sh
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/crypto.py
	$(BIN)/python bench/kbs.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache
