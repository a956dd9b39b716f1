"""The knob registry (compiler/knobs.py): every LOWBIT_* variable the code names is declared there, only the
registry reads the environment, values are read when asked for, a malformed value is a user error naming
the variable, and docs/knobs.md is the generated table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from compiler import knobs
from compiler.errors import LowbitError

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for d in ("compiler", "hwsim", "rtl", "runtime", "benchmarks", "examples", "scripts") for p in sorted((ROOT / d).rglob("*")) if p.suffix in (".py", ".sh")]
NAME = re.compile(r"\bLOWBIT_[A-Z0-9_]*[A-Z0-9]\b")  # a full name (prefixes such as "LOWBIT_TVM_" end in _)


def test_every_named_variable_is_declared():
    named = {(m, p.relative_to(ROOT)) for p in SOURCES for m in NAME.findall(p.read_text())}
    unknown = sorted(f"{m} ({p})" for m, p in named if m not in knobs.KNOBS)
    assert not unknown, f"LOWBIT_* variables not declared in compiler/knobs.py: {unknown}"


def test_only_the_registry_reads_the_environment():
    reads = re.compile(r"(environ\.get|environ\[|getenv)\(?\s*[\"']LOWBIT_")
    offenders = [str(p.relative_to(ROOT)) for p in SOURCES if p.name != "knobs.py" and reads.search(p.read_text())]
    assert not offenders, f"read LOWBIT_* through compiler.knobs, not os.environ: {offenders}"


def test_values_are_read_at_call_time(monkeypatch):
    monkeypatch.delenv("LOWBIT_MLIR_LANES", raising=False)
    assert knobs.MLIR_LANES.get() == 32
    monkeypatch.setenv("LOWBIT_MLIR_LANES", "16")
    assert knobs.MLIR_LANES.get() == 16
    monkeypatch.setenv("LOWBIT_TVM_DISABLE_KERNELS", " lut-cpu, vnni-cpu ,")
    assert knobs.TVM_DISABLE_KERNELS.get() == ("lut-cpu", "vnni-cpu")
    monkeypatch.setenv("LOWBIT_TVM_CUDA_GEMM_TILE", "32X128")
    assert knobs.TVM_CUDA_GEMM_TILE.get() == (32, 128)
    monkeypatch.setenv("HOME", "/nonexistent-home")
    monkeypatch.delenv("LOWBIT_CACHE_DIR", raising=False)
    assert knobs.CACHE_DIR.get() == Path("/nonexistent-home/.cache/lowbit")


@pytest.mark.parametrize(
    "name, value",
    [("LOWBIT_TVM_TUNE", "maybe"), ("LOWBIT_MLIR_LANES", "0"), ("LOWBIT_MLIR_THREADS", "two"), ("LOWBIT_RTL_SIMULATOR", "xcelium"),
     ("LOWBIT_TVM_CUDA_GEMM_TILE", "64"), ("LOWBIT_TVM_CUDA_GEMV_MAX_M", "-1")],
)
def test_a_malformed_value_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(LowbitError, match=name):
        knobs.KNOBS[name].get()


def test_compile_knobs_set_lists_only_set_compile_knobs(monkeypatch):
    for k in knobs.KNOBS:
        monkeypatch.delenv(k, raising=False)
    assert knobs.compile_knobs_set() == {}
    monkeypatch.setenv("LOWBIT_MLIR_A8_INT32", "1")
    monkeypatch.setenv("LOWBIT_MLIR_THREADS", "1")  # a run knob: not recorded
    assert knobs.compile_knobs_set() == {"LOWBIT_MLIR_A8_INT32": "1"}
    assert knobs.compile_knobs_set("LOWBIT_TVM_") == {}


def test_docs_table_is_current():
    assert (ROOT / "docs" / "knobs.md").read_text() == knobs.markdown_table(), "regenerate: python -m compiler.knobs > docs/knobs.md"
