import os
import sys
from pathlib import Path

# The tests' matrices are small: OpenBLAS's threads cost more than they give there (measured 2.5x slower with
# two threads on a 2-core machine). Set before numpy is first imported; scripts/test.sh sets it too.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Hypothesis: no wall-clock deadlines (CI machines are shared and slow); examples stay modest.
from hypothesis import settings  # noqa: E402

settings.register_profile("lowbit", deadline=None, max_examples=40, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "lowbit"))


@pytest.fixture(scope="session")
def llama_tiny():
    from compiler.frontend import load_model

    return load_model("llama-tiny")


@pytest.fixture(scope="session")
def bert_tiny():
    from compiler.frontend import load_model

    return load_model("bert-tiny")
