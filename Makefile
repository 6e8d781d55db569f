# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint format stack-up stack-down lock clean

# pip -qq: errors only (setuptools' editable-install banner is not one).
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "annrec needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq --upgrade pip
	$(BIN)/pip install -qq -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## demo: local Kafka + Redis, a synthetic index, a worker, requests through Kafka, printed.
demo: $(STAMP)
	$(BIN)/annrec demo

## test: unit tests and integration tests on real Kafka and Redis (started when not configured).
test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

stack-up: $(STAMP)
	@$(BIN)/annrec stack up

stack-down: $(STAMP)
	@$(BIN)/annrec stack down

## lock: refresh constraints.txt (the versions dev and CI install) from the current venv
lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable | grep -v '^annrec' > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
