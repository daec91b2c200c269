#!/usr/bin/env bash
# The main job: compile the seed CNN, run it on the VM and on the RTL (Verilator), compare
# them, and print the latency report with a timeline plot.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
out=build/demo
mkdir -p "$out"

echo "== 1. The seed example on the VM (examples/seed_cnn.py; it saves cnn.vollo in $out)"
(cd "$out" && python ../../examples/seed_cnn.py)

echo
echo "== 2. Compile the seed CNN for ia_420f_c6b32"
tidal compile examples/models.py:seed_cnn --config ia_420f_c6b32 --streaming-axis 2 \
    -o "$out/seed_cnn.bin"

echo
echo "== 3. VM vs RTL (Verilator, full C6B32), 16 timesteps"
echo "   (the C6B32 model is built once per machine, in minutes, and kept in the build cache"
echo "   $(.venv/bin/python -c 'from sim.cosim.cache import root; print(root())'); the line 'model cached'"
echo "   or 'model fresh: ...' below says which; 'tidal cache' shows the cache)"
tidal compare "$out/seed_cnn.bin" --random 16 --simulator verilator

echo
echo "== 4. Latency report"
tidal report "$out/seed_cnn.bin" --format text --plot "$out/timeline.png"
echo "timeline plot: $out/timeline.png"
