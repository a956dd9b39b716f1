#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite (slow tests included, as CI does).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for the quick set.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
set +e
# One pytest worker per core (at most 8; LOWBIT_TEST_WORKERS overrides, 0 runs in this process), each test module
# on one worker so its module fixtures are built once; small matrices: one BLAS thread per process is faster
# (see tests/conftest.py).
workers=${LOWBIT_TEST_WORKERS:-$(nproc)}
((workers > 8)) && workers=8
xdist=()
((workers > 1)) && xdist=(-n "$workers" --dist loadscope)
# one thread per pool and worker: the workers already fill the cores (TVM would give each worker one per core)
OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} TVM_NUM_THREADS=${TVM_NUM_THREADS:-1} .venv/bin/python -m pytest "${xdist[@]}" --durations=30 "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests"  # exit code 5: nothing selected; not a failure of the code
  exit 0
fi
exit "$rc"
