"""What every compiled backend promises about its artifact folder: a new process loads and runs it without
any compiler and gets the tokens this process gets (those of ref); `lowbit run --backend B --compare ref`
works on a causal LM and on an encoder compiled from the command line; an artifact without the target, or
with its main file gone, is a one-line error naming `--target`. A new backend adds a BACKENDS row.
Family-specific layouts and errors stay in the family tests (tests/compiler/backends/*)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import runtime
from compiler.compile import compile_model
from compiler.errors import LowbitError
from hwsim.designs import DESIGNS
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[3]

# backend -> (compile target, the encoder spec it runs, extra compile flags, its folder's main file)
BACKENDS = {
    "tvm-cpu": ("tvm-cpu", "w8g64a8", [], "model.so"),
    "mlir-cpu": ("mlir-cpu", "w3g32", ["--dump-mlir"], "model.vmfb"),
    **{f"hwsim:{d}": (d, "w4g128a8", [], "program.json") for d in DESIGNS},
}
# a fresh interpreter where compiling is impossible: the runtime only loads what the compile wrote
NO_COMPILERS = """
import sys
sys.modules["iree.compiler"] = None
try:
    import tvm
    def no_compile(*a, **k):
        raise AssertionError("the runtime must not compile")
    tvm.compile = no_compile
    tvm.relax.build = no_compile
except ImportError:
    pass
"""
IDS = [1, 72, 101, 108, 108, 111]


@pytest.fixture(scope="module")
def llama_art(tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "llama-w4a8"
    ts = ",".join(dict.fromkeys(t for t, *_ in BACKENDS.values()))
    # kv f32: the top-1 checks below isolate the backends' arithmetic (an fp16 cache rounds each side's float noise to
    # fp16 steps, which moves near-ties of this random model; tests/runtime/backends/test_agreement.py covers fp16)
    compile_model("llama-tiny", out, quant="w4g128a8", targets=f"ref,{ts}", progress=False, kv="f32")
    return out


@pytest.fixture(scope="module")
def ref_only_art(tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "ref-only"
    compile_model("bert-tiny", out, quant="w4g128", targets="ref", progress=False)
    return out


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_reloads_and_runs_in_a_new_process(llama_art, backend):
    m = runtime.load(llama_art)
    here = m.generate(IDS, 4, backend).tokens
    code = NO_COMPILERS + f"""
sys.path.insert(0, {str(ROOT)!r})
import runtime
print(runtime.load({str(llama_art)!r}).generate({IDS!r}, 4, {backend!r}).tokens)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == str(here)
    assert here == m.generate(IDS, 4, "ref").tokens


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_cli_run_compare_ref_causal(llama_art, backend, capsys):
    code, out, err = run_cli(["run", llama_art, "--backend", backend, "--compare", "ref", "--tokens", "5"], capsys)
    assert code == 0, err
    assert f"backend {backend}" in out and f"{backend} vs ref" in out
    line = next(ln for ln in out.splitlines() if "cosine similarity" in ln)
    assert float(line.split()[-2]) >= 0.999
    agree = next(ln for ln in out.splitlines() if "top-1" in ln)
    assert float(agree.split()[-2]) == 1.0


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_cli_compile_and_run_encoder(tmp_path, backend, capsys):
    target, spec, flags, main = BACKENDS[backend]
    out = tmp_path / "bert"
    code, o, err = run_cli(["compile", "bert-tiny", "-o", out, "--quant", spec, "--target", target, *flags], capsys)
    assert code == 0, err
    assert (out / target / main).is_file()
    if "--dump-mlir" in flags:  # our module and IREE's twelve compilation phases
        assert len(list((out / target / "stages").glob("*.mlir"))) == 12
    code, o, err = run_cli(["run", out, "--backend", backend, "--compare", "ref"], capsys)
    assert code == 0, err
    line = next(ln for ln in o.splitlines() if "cosine similarity, min" in ln)
    assert float(line.split()[-2]) >= 0.999


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_artifact_without_the_target_names_the_fix(ref_only_art, backend, capsys):
    target = BACKENDS[backend][0]
    code, out, err = run_cli(["run", ref_only_art, "--backend", backend], capsys)
    assert code == 2
    assert "was not compiled for" in err and target in err and f"--target {target}" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, out, err = run_cli(["run", ref_only_art, "--backend", "ref", "--compare", backend], capsys)
    assert code == 2 and "was not compiled for" in err


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_missing_main_file_is_refused(llama_art, tmp_path, backend):
    target, _, _, main = BACKENDS[backend]
    bad = tmp_path / "bad"
    shutil.copytree(llama_art, bad)
    (bad / target / main).unlink()
    with pytest.raises(LowbitError, match=f"--target {target}"):
        runtime.load(bad).backend(backend)
