# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out
# Everything ruff checks and formats (pyproject.toml holds its configuration).
SOURCES := data_prep trainer serving benchmarks srgan_cli tests demo.py setup.py

.PHONY: install test demo lint format clean

# Re-installs whenever setup.py (dependencies, console scripts, packages) is newer than the stamp.
$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -e '.[train,test,demo]'
	touch $(STAMP)

install: $(STAMP)

# Two pytest workers (pytest-xdist): most tests use one core, and this machine has two. Each worker
# splits its CPU into 2 logical devices (tests/conftest.py); the slowest tests are listed at the end.
TEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest tests -n $(TEST_WORKERS) --durations=10

demo: $(STAMP)
	$(PY) -m demo --output_dir=$(DEMO_DIR)

lint: $(STAMP)
	$(RUFF) check $(SOURCES)
	$(RUFF) format --check $(SOURCES)

format: $(STAMP)
	$(RUFF) check --select I --fix $(SOURCES)
	$(RUFF) format $(SOURCES)

clean:
	rm -rf $(VENV) $(DEMO_DIR) *.egg-info
