# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test models checks clean

$(BIN)/anpr-edge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

models: $(BIN)/anpr-edge
	$(BIN)/anpr-edge prepare-models

demo: models
	$(BIN)/anpr-edge demo

test: models
	$(BIN)/python -m pytest -q

checks: $(BIN)/anpr-edge
	$(BIN)/pip install -q ruff mypy
	$(BIN)/ruff check edge benchmarks tests
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) models/.cache models/*.onnx models/prepared.json
