# make run   set up, then run the main job on the bundled example
# make test  set up, then run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The example model is the tiny test fixture until the bundled default model arrives.
EXAMPLE_MODEL ?= ../shared/fixtures/bilm_tiny

run: setup
	$(VENV)/bin/elmobatch embed examples/messages.csv --out out/messages --id-column id --model $(EXAMPLE_MODEL) --keep-text

test: setup
	$(PY) -m pytest -q
