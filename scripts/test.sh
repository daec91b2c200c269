#!/usr/bin/env bash
# Run the test suite in tiers, fastest first; stop at the first failing tier.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# Every tier must really run: a missing simulator fails instead of skipping (tests/conftest.py).
export TIDAL_NEED_SIMULATORS=1
tiers=(
  "isa:tests/test_isa.py tests/test_numerics.py tests/test_functions.py tests/test_dependencies.py"
  "front end:tests/test_frontend*.py tests/test_nnir*.py tests/test_onnx.py"
  "compiler+VM:tests/test_vm.py tests/test_vm_fast.py tests/test_compiler.py tests/test_compiler_functions.py tests/test_recurrent.py tests/test_multi_model.py tests/test_seed.py tests/test_user_inputs.py tests/test_reset.py"
  "RTL units:tests/test_rtl_arith.py tests/test_rtl_units.py tests/test_rtl_function.py"
  "timing:tests/test_timing.py"
  "tools:tests/test_cli.py tests/test_report.py tests/test_cli_fuzz.py tests/test_cli_sequences.py"
  "co-simulation:tests/test_cosim.py tests/test_cosim_directed.py tests/test_cosim_fn.py tests/test_cosim_multi.py tests/test_cosim_random.py tests/test_build_cache.py tests/test_cosim_scale.py tests/test_cosim_recurrent.py tests/test_cosim_c6b32.py tests/test_cosim_reset.py"
)
# Tiers whose tests are many independent CPU-bound simulations run on two workers
# (pytest-xdist): the CI machine has two cores. Builds of one model are serialised by the
# build cache's lock (sim/cosim/cache.py), so two workers never build it twice.
declare -A parallel=(["RTL units"]=1 ["co-simulation"]=1)
# Every test file must belong to a tier: a file left out would silently never run.
declare -A tiered=()
for tier in "${tiers[@]}"; do
  for f in ${tier#*:}; do tiered[$f]=1; done
done
for f in tests/test_*.py; do
  [ -n "${tiered[$f]:-}" ] || { echo "test file $f is in no tier of scripts/test.sh"; exit 1; }
done
for tier in "${tiers[@]}"; do
  name=${tier%%:*}
  files=()
  for f in ${tier#*:}; do [ -e "$f" ] && files+=("$f"); done
  [ ${#files[@]} -gt 0 ] || continue
  echo "=== tier: $name (${files[*]})"
  args=()
  [ -n "${parallel[$name]:-}" ] && args=(-n 2)
  start=$SECONDS
  # The slowest tests are listed: CI's time limit is the suite's budget.
  # The full C6B32's tests (a fresh model takes most of CI's budget to build) are
  # `make test-c6b32` (tests/test_cosim_c6b32.py).
  $PY -m pytest -q -p no:cacheprovider --durations=5 -m "not c6b32" "${args[@]}" "${files[@]}"
  echo "=== tier: $name took $((SECONDS - start)) s (suite so far: ${SECONDS} s)"
done
