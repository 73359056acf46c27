# oldphoto: two commands.
#   make run    install (first time) and run the archive job on the embedded defaults
#   make test   install (first time) and run the test suite (what CI runs)
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin
SOURCE ?= samples/scans
DEST   ?= out/samples

.PHONY: install run test bench clean

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

clean:
	rm -rf $(VENV) out .pytest_cache
