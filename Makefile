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

run: setup
	$(VENV)/bin/elmobatch info ../shared/fixtures/bilm_tiny

test: setup
	$(PY) -m pytest -q
