#!/usr/bin/env bash
# Sets everything up, then runs the main job: compile models to low-bit artifacts, run them on every CPU
# path (numpy reference, TVM, MLIR/IREE, the simulated LUT-Tensor-Core and MixPE arrays) with their distance
# to the float model or to ref, run one compiled layer on the generated Verilog (bit and cycle exact against
# hwsim), and write the cost report for llama-1b on the three array designs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
lowbit=.venv/bin/lowbit
out=${OUT:-build/demo}
mkdir -p "$out"
run() { echo; echo "\$ lowbit $*"; "$lowbit" "$@"; }
run compile llama-tiny -o "$out/llama-tiny-w4g128" --quant w4g128 --target ref,tvm-cpu,mlir-cpu
run run "$out/llama-tiny-w4g128" --backend ref --prompt "Low-bit inference" --tokens 16 --compare float
run run "$out/llama-tiny-w4g128" --backend tvm-cpu --prompt "Low-bit inference" --tokens 16 --compare ref
run run "$out/llama-tiny-w4g128" --backend mlir-cpu --prompt "Low-bit inference" --tokens 16 --compare ref
run compile llama-tiny -o "$out/llama-tiny-w2g128a8-accel" --quant w2g128a8 --target ref,lut-tc,mixpe
run run "$out/llama-tiny-w2g128a8-accel" --backend hwsim:lut-tc --prompt "Low-bit inference" --tokens 8 --compare ref
run run "$out/llama-tiny-w2g128a8-accel" --backend hwsim:mixpe --prompt "Low-bit inference" --tokens 8 --compare ref
run sim "$out/llama-tiny-w2g128a8-accel" --layer l0.q --design mixpe --rows 4
run compile bitnet-tiny -o "$out/bitnet-tiny-ternary" --quant ternary
run run "$out/bitnet-tiny-ternary" --backend ref --tokens 8 --compare float
run compile bert-tiny -o "$out/bert-tiny-w4g128a8" --quant w4g128a8
run run "$out/bert-tiny-w4g128a8" --backend ref --compare float
run compile all-minilm-l6-v2 -o "$out/minilm-w8" --quant w8pc
run run "$out/minilm-w8" --backend ref --compare float
run sim --design lut-tc --params quant=w2g128a8 --vectors 200
run report llama-1b --designs lut-tc,mixpe,mac -o "$out/report-llama-1b"
