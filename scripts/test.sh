#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite (slow tests included, as CI does).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for the quick set.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
set +e
# small matrices: one BLAS thread per process is faster (see tests/conftest.py)
OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} .venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests"  # exit code 5: nothing selected; not a failure of the code
  exit 0
fi
exit "$rc"
