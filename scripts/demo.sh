#!/usr/bin/env bash
# Sets everything up, then runs the main job: compile models to low-bit artifacts, run them on the
# reference and TVM CPU backends with their distance to the float model (or to ref), and check a generated
# LUT-Tensor-Core array bit for bit in RTL simulation.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
lowbit=.venv/bin/lowbit
out=${OUT:-build/demo}
mkdir -p "$out"
run() { echo; echo "\$ lowbit $*"; "$lowbit" "$@"; }
run compile llama-tiny -o "$out/llama-tiny-w4g128" --quant w4g128 --target ref,tvm-cpu
run run "$out/llama-tiny-w4g128" --backend ref --prompt "Low-bit inference" --tokens 16 --compare float
run run "$out/llama-tiny-w4g128" --backend tvm-cpu --prompt "Low-bit inference" --tokens 16 --compare ref
run compile bitnet-tiny -o "$out/bitnet-tiny-ternary" --quant ternary
run run "$out/bitnet-tiny-ternary" --backend ref --tokens 8 --compare float
run compile bert-tiny -o "$out/bert-tiny-w4g128a8" --quant w4g128a8
run run "$out/bert-tiny-w4g128a8" --backend ref --compare float
run compile all-minilm-l6-v2 -o "$out/minilm-w8" --quant w8pc
run run "$out/minilm-w8" --backend ref --compare float
run sim --design lut-tc --params quant=w2g128a8 --vectors 200
