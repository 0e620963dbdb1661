# Every target creates .venv on first use and installs what it needs. torch is pinned to the CPU
# wheel for this repository's own environment; pyproject keeps a loose range for real users.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: venv test demo demo-quick lint format clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[dev,tensorboard]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -x --timeout=900 $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/covft demo $(DEMO_ARGS)

demo-quick: $(STAMP)
	$(BIN)/covft demo --quick $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
