# One-command entry points. Each target does its own set-up (venv, editable install, Icarus).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
SIM    ?= icarus
TEST   ?=
WAVES  ?= 0
SEED   ?=
SEEDS  ?= 10
PYTEST_ARGS ?=
TEST_WORKERS ?= auto
BENCH_SIM_ARGS ?=
# WAVES=1 on Verilator writes FST, whose writer needs the LZ4 headers.
WAVE_DEPS := $(if $(filter-out 0,$(WAVES)),$(if $(filter verilator all,$(SIM)),fst-deps))

.PHONY: setup test demo bench-model bench-sim sim regress fst-deps verilog lint synth clean help

help:
	@echo "make test [TEST_WORKERS=auto]  set up, then run the test suite (one pytest-xdist worker per core)"
	@echo "make demo [SIM=verilator|icarus]  set up, then RUN_NMF on the bundled default in co-simulation"
	@echo "make bench-model  reference NMF vs scikit-learn, and the functional chip model, on camera"
	@echo "make sim [SIM=icarus|verilator|all] [TEST=bench|module|cocotb test] [WAVES=1] [SEED=n]"
	@echo "                  run cocotb benches without pytest (all by default); prints the seed and"
	@echo "                  the JUnit files; COCOTB_RANDOM_SEED=n (or SEED=n) reproduces a run"
	@echo "make regress [SEEDS=10] [SIM=icarus|verilator]"
	@echo "                  constrained-random bench on seeds 1..SEEDS; merged functional coverage"
	@echo "                  (build/random-SIM/coverage-merged.json), fails below 95% of the bins"
	@echo "make bench-sim    simulated cycles/s on Icarus and Verilator: AFE-bound workload vs bare RTL"
	@echo "make verilog      write the controller's Verilog to build/anmf_controller.v"
	@echo "make lint         Verilator --lint-only -Wall on the generated Verilog; ruff on the Python"
	@echo "make synth TARGET=ice40|ecp5 [SEEDS=1,2,3]"
	@echo "                  synthesize, place and route (YoWASP); report in build/synth-TARGET.json;"
	@echo "                  SEEDS: the same netlist placed and routed with each nextpnr seed"

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

# One pytest-xdist worker per core; a test file stays on one worker (its module fixtures build once).
test: setup
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The demo runs Verilator unless SIM is given (make demo SIM=icarus); `make sim` defaults to Icarus.
demo: setup
	$(VENV)/bin/anmf demo $(if $(filter command line environment,$(origin SIM)),--sim $(SIM))

bench-model: setup
	$(PY) -m anmf.model.bench

sim: setup $(WAVE_DEPS)
	$(PY) -m anmf.testbench.sim --sim $(SIM) $(if $(TEST),--test $(TEST)) $(if $(SEED),--seed $(SEED)) \
	  $(if $(filter-out 0,$(WAVES)),--waves)

regress: setup
	$(PY) -m anmf.testbench.bench_random --seeds $(SEEDS) --sim $(SIM)

bench-sim: setup
	$(PY) -m anmf.testbench.bench_speed $(BENCH_SIM_ARGS)

fst-deps:
	@printf '#include <lz4.h>\n' | c++ -E -x c++ - >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liblz4-dev) ; \
	  else \
	    echo "Verilator FST waveforms need the LZ4 headers: install liblz4-dev (Debian/Ubuntu: sudo apt-get install liblz4-dev)"; exit 1; \
	  fi; }

verilog: setup
	$(VENV)/bin/anmf verilog -o build/anmf_controller.v

lint: verilog
	$(PY) -m anmf.hdl.lint build/anmf_controller.v
	$(VENV)/bin/ruff check hdl model testbench src tests

synth: setup
	$(VENV)/bin/anmf synth --target $(or $(TARGET),ecp5) --seeds $(or $(SEEDS),1) --json build/synth-$(or $(TARGET),ecp5).json

clean:
	rm -rf build out .pytest_cache
