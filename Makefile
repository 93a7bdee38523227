# The two commands of the README: `make run` (the whole system) and `make test` (the suite).
# Both create the virtual environment and install what is needed first.

VENV := .venv
STAMP := $(VENV)/.installed
PYTHON ?= python3

.PHONY: run test bench deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

deps: $(STAMP)

run: $(STAMP)
	scripts/system-deps.sh run
	$(VENV)/bin/parley dev

test: $(STAMP)
	scripts/system-deps.sh test
	$(VENV)/bin/pytest

bench: $(STAMP)
	scripts/system-deps.sh run
	$(VENV)/bin/python -m bench

clean:
	rm -rf $(VENV) .run .pytest_cache
