# The two commands: `make demo` and `make test`. Each one creates/refreshes a local
# virtualenv in .venv, installs the project with its dev extras, then runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench churn-eval install clean unit integration

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tierstream demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check app agents schemas tests
	$(BIN)/ruff format --check app agents schemas
	$(BIN)/mypy

test: $(STAMP) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit tests/agents tests/contracts $(PYTEST_ARGS)

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

# Replay evaluation of the churn early warning on simulated customers with known churn
# (README: "Churn early warning: how well it works"); CHURN_EVAL_ARGS="--customers 1000".
churn-eval: $(STAMP)
	$(BIN)/python -m tests.bench.churn_eval $(CHURN_EVAL_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
