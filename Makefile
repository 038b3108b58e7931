# make run        set up (.venv), then score the example messages with the bundled default model and head
# make test       set up (.venv, with the test extras), then run the whole test suite on two processes, one
#                 test file each at a time (a file's Spark session or cluster is started once); what CI runs
# make test-fast  the same suite without the tests marked slow, on two processes: the edit-and-check loop
# make lint       ruff and mypy over the code, as configured in pyproject.toml
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test test-fast lint
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

run: setup
	$(VENV)/bin/elmobatch score examples/messages.csv --out out/messages.scored.csv
	@echo "first rows of out/messages.scored.csv:"
	@head -n 6 out/messages.scored.csv

test: $(VENV)/.installed-test
	$(PY) -m pytest -q -n 2 --dist loadfile

test-fast: $(VENV)/.installed-test
	$(PY) -m pytest -q -m "not slow" -n 2

lint: $(VENV)/.installed-test
	$(PY) -m ruff check .
	$(PY) -m mypy
