# One-command entry points. Each target does its own set-up (venv, editable install, Icarus).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
SIM    ?= icarus
PYTEST_ARGS ?=

.PHONY: setup test demo bench-model verilog lint clean help

help:
	@echo "make test         set up, then run the test suite"
	@echo "make demo         set up, then run the demo on the bundled default"
	@echo "make bench-model  reference NMF vs scikit-learn, and the functional chip model, on camera"
	@echo "make verilog      write the controller's Verilog to build/anmf_controller.v"
	@echo "make lint         Verilator --lint-only -Wall on the generated Verilog"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v iverilog >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog) ; \
	  else \
	    echo "Icarus Verilog is missing: install it (Debian/Ubuntu: sudo apt-get install iverilog)"; exit 1; \
	  fi; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/anmf demo

bench-model: setup
	$(PY) -m anmf.model.bench

verilog: setup
	$(VENV)/bin/anmf verilog -o build/anmf_controller.v

lint: verilog
	$(PY) -m anmf.hdl.lint build/anmf_controller.v

clean:
	rm -rf build out .pytest_cache
