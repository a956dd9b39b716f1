"""Every numeric option is bounded and a value past the bound is one line naming the bound (array shape and
SRAM in --array and --params, --tokens against the model's context, clock, bandwidth, threads, --ctx,
--max-windows, seeds, sampling); click's own usage errors (unknown option, missing argument, bad choice, bad
number) are one line `error: ...; see lowbit COMMAND --help`, without the usage block. Each case is the
limit + 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import run_cli
from tests.reliability.fixtures import one_error_line

SEED_MAX = 2**63 - 1
ACCEL = ["--target", "mac", "--quant", "w4g128a8"]


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> Path:
    from compiler.compile import compile_model

    out = tmp_path_factory.mktemp("bounds") / "llama"
    compile_model("llama-tiny", out, quant="w4g128", progress=False)
    return out


# args (ART: the llama-tiny artifact, OUT: a fresh -o), what the line says (the bound)
BOUNDS = {
    "compile --calib-samples": (["compile", "llama-tiny", "-o", "OUT", "--method", "gptq", "--calib-samples", 4097], "4097 is not in the range 1<=x<=4096"),
    "compile --calib-seqlen": (["compile", "llama-tiny", "-o", "OUT", "--method", "gptq", "--calib-seqlen", 8193], "8193 is not in the range 8<=x<=8192"),
    "compile --damp": (["compile", "llama-tiny", "-o", "OUT", "--damp", 10.5], "10.5 is not in the range 0<x<=10"),
    "compile --damp nan": (["compile", "llama-tiny", "-o", "OUT", "--damp", "nan"], "nan is not a finite number in the range 0<x<=10"),
    "compile --smooth": (["compile", "llama-tiny", "-o", "OUT", "--smooth", 1.5], "1.5 is not in the range 0<=x<=1"),
    "compile --seed": (["compile", "llama-tiny", "-o", "OUT", "--seed", -1], f"-1 is not in the range 0<=x<={SEED_MAX}"),
    "compile --array M": (["compile", "llama-tiny", "-o", "OUT", *ACCEL, "--array", "M=1025"], "M=1025 exceeds the limit of 1024"),
    "compile --array N": (["compile", "llama-tiny", "-o", "OUT", *ACCEL, "--array", "N=8200"], "N=8200 exceeds the limit of 8192"),
    "compile --array K": (["compile", "llama-tiny", "-o", "OUT", *ACCEL, "--array", "K=128"], "K=128 exceeds the limit of 64"),
    "compile --array M x N": (["compile", "llama-tiny", "-o", "OUT", *ACCEL, "--array", "M=1024,N=2048"], "2097152 processing elements exceeds the limit of 1048576"),
    "compile --array SRAM": (["compile", "llama-tiny", "-o", "OUT", *ACCEL, "--array", "weight_sram_kib=1048577"], "weight_sram_kib=1048577 exceeds the limit of 1048576"),
    "run --tokens": (["run", "ART", "--tokens", 100001], "100001 is not in the range 1<=x<=100000"),
    "run --tokens past the context": (["run", "ART", "--ids", "1,2", "--tokens", 2047], "the prompt's 2 tokens and --tokens 2047 make 2049, more than the model's context of 2048"),
    "run --temperature": (["run", "ART", "--temperature", 100.5], "100.5 is not in the range x<=100"),
    "run --temperature nan": (["run", "ART", "--temperature", "nan"], "nan is not a finite number in the range x<=100"),
    "run --temperature negative": (["run", "ART", "--temperature", -0.5], "--temperature -0.5 is negative"),
    "run --top-k": (["run", "ART", "--temperature", 1, "--top-k", 2**24 + 1], "16777217 is not in the range x<=16777216"),
    "run --top-p": (["run", "ART", "--temperature", 1, "--top-p", 1.5], "--top-p 1.5 is outside (0, 1]"),
    "run --top-p nan": (["run", "ART", "--temperature", 1, "--top-p", "nan"], "--top-p nan is outside (0, 1]"),
    "run --seed": (["run", "ART", "--temperature", 1, "--seed", SEED_MAX + 1], f"is not in the range 0<=x<={SEED_MAX}"),
    "eval --ctx": (["eval", "ART", "--ctx", 2**20 + 1], "1048577 is not in the range 4<=x<=1048576"),
    "eval --ctx past the context": (["eval", "ART", "--ctx", 2049, "--no-kl"], "--ctx 2049 is larger than the model's context of 2048 tokens"),
    "eval --max-windows": (["eval", "ART", "--max-windows", 2**20 + 1], "1048577 is not in the range 1<=x<=1048576"),
    "sim --vectors": (["sim", "--design", "mac", "--vectors", 1_000_001], "1000001 is not in the range 1<=x<=1000000"),
    "sim --params M": (["sim", "--design", "mac", "--params", "M=1025"], "M=1025 exceeds the limit of 1024"),
    "sim --params group": (["sim", "--design", "mac", "--params", "group=65540"], "group=65540 exceeds the limit of 65536"),
    "sim --params max_groups": (["sim", "--design", "mac", "--params", "max_groups=257"], "max_groups=257 is outside 1..256"),
    "report --clock-ghz": (["report", "bert-tiny", "-o", "OUT", "--clock-ghz", 10.5], "10.5 is not in the range x<=10"),
    "report --dram-gbps": (["report", "bert-tiny", "-o", "OUT", "--dram-gbps", 100_001], "100001.0 is not in the range x<=100000"),
    "report --dram-gbps nan": (["report", "bert-tiny", "-o", "OUT", "--dram-gbps", "nan"], "nan is not a finite number in the range x<=100000"),
    "report --prefill": (["report", "bert-tiny", "-o", "OUT", "--prefill", 65537], "65537 is not in the range 1<=x<=65536"),
    "report --arrays": (["report", "bert-tiny", "-o", "OUT", "--arrays", 4097], "4097 is not in the range 1<=x<=4096"),
    "sweep --jobs": (["sweep", "bert-tiny", "-o", "OUT", "-j", 257], "257 is not in the range 1<=x<=256"),
    "sweep --clock-ghz": (["sweep", "bert-tiny", "-o", "OUT", "--clock-ghz", 0], "clock_ghz must be > 0, got 0.0"),
    "sweep --bits past the arrays": (["sweep", "bert-tiny", "-o", "OUT", "--bits", 9], "weight bits must be 1..4, got 9"),
    "sweep --shapes past the limit": (["sweep", "bert-tiny", "-o", "OUT", "--shapes", "2048x64"], "M=2048 exceeds the limit of 1024"),
    "sweep --groups not a multiple of K": (["sweep", "bert-tiny", "-o", "OUT", "--groups", 7], "group 7 must be a multiple of K=4"),
    "sweep grid too large": (["sweep", "bert-tiny", "-o", "OUT", "--shapes", ",".join(f"{m}x64" for m in range(1, 401)),
                              "--groups", ",".join(str(4 * g) for g in range(1, 101))], "more than the limit of 100000"),
    "export -o inside the artifact": (["export", "ART", "-o", "ART/inside.gguf"], "is inside the artifact"),
    "export -o an unwritable place": (["export", "ART", "-o", "/proc/lowbit-test.gguf"], "cannot write /proc/lowbit-test.gguf"),
}


def fill(args, art, tmp_path):
    return [art if a == "ART" else tmp_path / "o" if a == "OUT" else str(art) + a[3:] if str(a).startswith("ART/") else a for a in args]


@pytest.mark.parametrize("case", list(BOUNDS))
def test_option_past_its_bound_is_one_error_line(art, tmp_path, capsys, case):
    args, expect = BOUNDS[case]
    code, _, err = run_cli(fill(args, art, tmp_path), capsys)
    assert expect in one_error_line(code, err)
    assert not (tmp_path / "o").exists()  # nothing written


def test_tokens_up_to_the_context_are_accepted(art):
    import runtime
    from compiler.errors import LowbitError

    m = runtime.load(art)
    assert m.context_length == 2048
    m.check_room(2, 2046)  # exactly the context
    with pytest.raises(LowbitError, match="pass --tokens 2046 or less"):
        m.check_room(2, 2047)


def test_mlir_threads_past_the_limit(monkeypatch):
    pytest.importorskip("iree.runtime")
    from compiler.errors import LowbitError
    from runtime.backends import mlir

    monkeypatch.setenv("LOWBIT_MLIR_THREADS", "1025")
    with pytest.raises(LowbitError, match="LOWBIT_MLIR_THREADS=1025 is more than the limit of 1024 threads"):
        mlir._runtime()


@given(M=st.integers(1, 2048), n8=st.integers(1, 2048), K=st.sampled_from([1, 2, 4, 64, 128]))
def test_array_config_bounds(M, n8, K):
    """An ArrayConfig exists exactly when its shape is within the limits; outside, the error names the limit."""
    from hwsim.config import ArrayConfig

    N = 8 * n8
    ok = M <= 1024 and N <= 8192 and K <= 64 and M * N <= 1 << 20
    try:
        ArrayConfig(design="mac", M=M, N=N, K=K, group=128)
    except ValueError as e:
        assert not ok and "exceeds the limit of" in str(e)
    else:
        assert ok


USAGE = {
    "unknown option": (["compile", "llama-tiny", "-o", "OUT", "--bogus"], "No such option '--bogus'", "lowbit compile"),
    "missing argument": (["compile"], "Missing argument 'MODEL'", "lowbit compile"),
    "missing required option": (["compile", "llama-tiny"], "Missing option '-o' / '--out'", "lowbit compile"),
    "bad choice": (["compile", "llama-tiny", "-o", "OUT", "--method", "zz"], "'zz' is not one of 'rtn', 'gptq'", "lowbit compile"),
    "bad int": (["run", "ART", "--tokens", "many"], "'many' is not a valid integer", "lowbit run"),
    "bad float": (["report", "bert-tiny", "-o", "OUT", "--clock-ghz", "fast"], "'fast' is not a valid float", "lowbit report"),
    "option without its value": (["run", "ART", "--tokens"], "Option '--tokens' requires an argument", "lowbit run"),
    "extra argument": (["show", "ART", "extra"], "unexpected extra argument (extra)", "lowbit show"),
    "unknown command": (["frobnicate"], "No such command 'frobnicate'", "lowbit"),
}


@pytest.mark.parametrize("case", list(USAGE))
def test_usage_error_is_one_error_line(art, tmp_path, capsys, case):
    args, expect, where = USAGE[case]
    code, _, err = run_cli(fill(args, art, tmp_path), capsys)
    line = one_error_line(code, err)
    assert expect in line and line.endswith(f"; see {where} --help"), line
    assert not (tmp_path / "o").exists()


def test_gptq_calibration_past_the_memory_is_refused(monkeypatch):
    """--calib-samples x --calib-seqlen whose activations would not fit: one line before any work (smollm2's shapes)."""
    import os

    from compiler.errors import LowbitError
    from compiler.quant.calib import calibration_memory, check_calibration_memory

    hp = {"hidden": 576, "inter": 1536, "heads": 9, "layers": 30}
    assert calibration_memory(hp, 16, 128) == 4 * 16 * 128 * 30 * (10 * 576 + 4 * 1536 + 9 * 128)
    real = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda k: 4096 if k == "SC_PAGE_SIZE" else (24 << 30) // 4096 if k == "SC_PHYS_PAGES" else real(k))
    check_calibration_memory(hp, 16, 128)  # 3.0 GiB of 24
    with pytest.raises(LowbitError, match=r"128 samples of 2048 tokens needs up to 888\.8 GiB, more than 3/4 of this machine's 24\.0 GiB"):
        check_calibration_memory(hp, 128, 2048)
