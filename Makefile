# tidal: the one entry point. `make help` lists the targets.
SHELL := /bin/bash
PY := .venv/bin/python
CONFIG ?= ia_420f_c6b32
STAMP := .venv/.tidal-setup

.PHONY: help setup demo test test-c6b32 test-fast cosim-both cosim-random mutate rtl bench timing functions lint clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

setup:  ## install system packages and the .venv (a quick no-op when up to date)
	@bash scripts/setup.sh

demo: setup  ## compile the seed CNN, run it on the VM and the RTL, compare, print the report
	@bash scripts/demo.sh

test: setup  ## the whole test suite, fastest tier first (what CI runs)
	@bash scripts/test.sh

test-c6b32: setup  ## co-simulation on the full C6B32 (seed CNN, LSTM across a reset, GELU/LayerNorm/softmax)
	TIDAL_NEED_SIMULATORS=1 $(PY) -m pytest -q -m c6b32 tests/test_cosim_c6b32.py

test-fast: setup  ## everything except co-simulation
	$(PY) -m pytest -q -m "not cosim"

cosim-both: setup  ## the co-simulation tests with every configuration on both simulators (make test: one each)
	TIDAL_COSIM_BOTH=1 TIDAL_NEED_SIMULATORS=1 $(PY) -m pytest -q tests/test_cosim*.py

cosim-random: setup  ## COUNT (default 50) random programs per configuration and simulator vs the VM (SEED=first seed)
	$(PY) -m sim.cosim.random_programs --count $(or $(COUNT),50) --seed $(or $(SEED),0)

mutate: setup  ## mutation testing of rtl/: COUNT (default 40) mutants vs the co-simulation suite, build/mutate/report.md
	$(PY) scripts/mutate.py --count $(or $(COUNT),40) --seed $(or $(SEED),1)

rtl: setup  ## write the Verilog of CONFIG (default ia_420f_c6b32) into build/rtl/CONFIG/
	$(PY) -m rtl.gen --config $(CONFIG) --out build/rtl/$(CONFIG)

bench: setup  ## run the benchmark suite: bench/results/latest.json and docs/benchmarks.md
	$(PY) bench/run.py

timing: setup  ## measured stage check: place and route every unit, docs/timing.md (fails if a stage is too slow)
	nice $(PY) bench/timing.py

functions: setup  ## measure every function-unit function over all bf16 inputs: the table in docs/numerics.md
	$(PY) scripts/function_table.py

lint: setup  ## ruff
	.venv/bin/ruff check isa compiler sim rtl tidal_cli bench tests examples

clean:  ## remove build products (keeps .venv)
	rm -rf build .pytest_cache .hypothesis
