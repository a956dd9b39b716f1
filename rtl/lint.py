"""Verilator `--lint-only -Wall` on generated arrays, with the listed waivers (each with its reason)."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from compiler.errors import LowbitError
from hwsim.config import ArrayConfig

# Verilator warnings waived inside the generated text (lint_off/lint_on around exactly the lines
# concerned), and why. Nothing is waived on the command line.
WAIVERS: dict[str, str] = {
    "UNUSEDPARAM": "the module parameters (M, N, K, B, AW, G, ...) are informational, for testbenches and "
    "tools to read the shape; the generator unrolls the datapath for exactly these values",
    "UNUSEDSIGNAL": "the LUT epilogue only (mode lut of rtl/gen/common.py): bit 0 of t = acc2 + c*S is always 0 "
    "(the LUT algebra makes the sum even) and is dropped by the exact >>> 1",
}


@dataclass
class LintResult:
    returncode: int
    warnings: list[str]
    output: str


def lint(cfg: ArrayConfig, outdir: str | Path) -> LintResult | None:
    """Lint `cfg`'s generated Verilog; None when Verilator is not installed."""
    from rtl.gen.common import write_verilog
    from rtl.sim import _verilator_env, build_root

    try:
        env = dict(os.environ)
        env.update(_verilator_env(build_root()))
    except LowbitError:
        return None
    path = write_verilog(cfg, outdir)
    cmd = ["verilator", "--lint-only", "-Wall", str(path)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    out = r.stdout + r.stderr
    warns = [ln for ln in out.splitlines() if re.match(r"%(Warning|Error)", ln)]
    return LintResult(r.returncode, warns, out)
