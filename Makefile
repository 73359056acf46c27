# oldphoto:
#   make run        install (first time) and run the archive job on the embedded defaults
#   make test       install (first time) and run the test suite (what CI runs)
#   make test-fast  the tests that start no Ray, PostgreSQL or Prefect and are not marked slow (< 2 min)
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin
SOURCE ?= samples/scans
DEST   ?= out/samples

.PHONY: install run test test-fast bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip<26"
	$(BIN)/pip install -e ".[test,train]" -c constraints.txt
	touch $@

run: install
	$(BIN)/oldphoto archive $(SOURCE) $(DEST)

test: install
	$(BIN)/python -m pytest -q -ra --durations=15

FAST = not slow and not ray and not postgres and not prefect
test-fast: install
	$(BIN)/python -m pytest -q -ra --durations=10 -m "$(FAST)"

clean:
	rm -rf $(VENV) out .pytest_cache
