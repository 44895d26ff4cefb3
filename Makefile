# Rackfleet: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
DEMO   ?= .demo
HEADLESS ?=
KEEP_LAB ?=
# Tests marked slow (the real Debian installer, the hand-written boot configs) take minutes each: `make
# test-all` runs them too. Test files run on 3 workers (pytest-xdist; each file on one worker, so a file's
# fixed lab ports are its own); PYTEST_ARGS=-q runs them one by one.
PYTEST_ARGS ?= -m "not slow" -n 3 --dist loadfile

.PHONY: venv test test-all lint bench demo demo-clean clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/.installed

test: venv
	$(BIN)/pytest -q $(PYTEST_ARGS)

test-all: venv
	$(BIN)/pytest -q -n 3 --dist loadfile

lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports

BENCH_ARGS ?=

# Figures, not tests: each script prints what it measured against the tools users would otherwise run.
bench: venv
	$(BIN)/python bench/inventory.py $(BENCH_ARGS)
	$(BIN)/python bench/ipmi_sweep.py $(BENCH_ARGS)
	$(BIN)/python bench/redfish_power.py $(BENCH_ARGS)
	$(BIN)/python bench/ups_poll.py $(BENCH_ARGS)
	$(BIN)/python bench/sweep.py $(BENCH_ARGS)
	$(BIN)/python bench/pxe_render.py
	$(BIN)/python bench/tui.py

# The virtual datacenter (fleet lab), imported into a fresh SQLite inventory in $(DEMO)/, swept with a
# few faults, then the TUI (quitting it stops the lab). HEADLESS=1: all but the TUI; KEEP_LAB=1 with it
# leaves the lab running.
demo: venv
	@if [ -f $(DEMO)/lab/lab.json ]; then $(BIN)/fleet lab stop --dir $(DEMO)/lab; fi
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	FLEET_DB=$(DEMO)/fleet.db FLEET_KEY_FILE=$(DEMO)/secret.key DEMO_DIR=$(DEMO) HEADLESS=$(HEADLESS) \
		KEEP_LAB=$(KEEP_LAB) $(BIN)/python -m fleet.demo

demo-clean:
	@if [ -f $(DEMO)/lab/lab.json ]; then $(BIN)/fleet lab stop --dir $(DEMO)/lab; fi
	rm -rf $(DEMO)

clean: demo-clean
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis .import_linter_cache .grimp_cache
