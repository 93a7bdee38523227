# The two commands of the README: `make run` (the whole system) and `make test` (the suite).
# Both create the virtual environment and install what is needed first.

VENV := .venv
STAMP := $(VENV)/.installed
PYTHON ?= python3
WEBCLIENT := services/gateway/webclient
WEBCLIENT_STAMP := $(WEBCLIENT)/node_modules/.installed

.PHONY: run test bench deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

# The web client's socket.io-client, from npm (no CDN at run time).
$(WEBCLIENT_STAMP): $(WEBCLIENT)/package-lock.json
	npm ci --prefix $(WEBCLIENT) --no-audit --no-fund
	touch $@

deps: $(STAMP) $(WEBCLIENT_STAMP)

run: $(STAMP) $(WEBCLIENT_STAMP)
	scripts/system-deps.sh run
	$(VENV)/bin/parley dev

test: $(STAMP) $(WEBCLIENT_STAMP)
	scripts/system-deps.sh test
	$(VENV)/bin/pytest

bench: $(STAMP) $(WEBCLIENT_STAMP)
	scripts/system-deps.sh run
	$(VENV)/bin/python -m bench

clean:
	rm -rf $(VENV) .run .pytest_cache
