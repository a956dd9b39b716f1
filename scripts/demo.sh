#!/usr/bin/env bash
# Sets everything up, then runs the main job: the real SmolLM2-135M-Instruct (a GGUF file) compiled with its own
# Q4_1 weights kept, run on every CPU path (numpy reference, TVM, MLIR/IREE, the simulated MixPE and
# LUT-Tensor-Core arrays) with its perplexity; then the presets and MiniLM, compiled to low-bit artifacts and run
# with their distance to the float model or to ref, one compiled layer on the generated Verilog (bit and cycle
# exact against hwsim), and the cost report for llama-1b on the three array designs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
lowbit=.venv/bin/lowbit
out=${OUT:-build/demo}
mkdir -p "$out"
run() { echo; echo "\$ lowbit $*"; "$lowbit" "$@"; }
run compile smollm2-135m -o "$out/smollm2-keep" --quant keep --target ref,tvm-cpu,mlir-cpu
for b in ref tvm-cpu mlir-cpu; do
  run run "$out/smollm2-keep" --backend "$b" --prompt "The capital of France is" --tokens 12
done
run run "$out/smollm2-keep" --backend tvm-cpu --chat --prompt "What is the capital of France?" --tokens 48
run eval "$out/smollm2-keep" --backend tvm-cpu --ctx 256 --max-windows 1 --no-progress
# the arrays take 1-4-bit codes: the tied Q8_0 head/embedding table is re-quantized to 4 bits with minimums
run compile smollm2-135m -o "$out/smollm2-keep-a8-accel" --quant keep --act a8 --quant-layer lm_head=w4g32-min --target ref,mixpe,lut-tc
run run "$out/smollm2-keep-a8-accel" --backend hwsim:mixpe --prompt "The capital of France is" --tokens 4 --compare ref
run run "$out/smollm2-keep-a8-accel" --backend hwsim:lut-tc --prompt "The capital of France is" --tokens 4 --compare ref
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
