"""yosys synthesis of the generated arrays: cell counts and CMOS transistor estimates as JSON.

`synthesize(design, params) -> dict` generates the array (rtl.sim.make_config's parameters), runs
yosys (`read_verilog; synth -flatten -top T; stat; stat -tech cmos; stat -json`) and returns / saves:

  cells            {yosys internal cell type: count}  (generic gate library after `synth`)
  cell_count       total cells;  ff_bits: flip-flop cells (one per bit)
  transistors_yosys  `stat -tech cmos`'s estimate; yosys counts 0 for flip-flops with enable or
                     reset (it prints a trailing '+'), so:
  ff_transistors     our estimate for those flip-flops (FF_TRANSISTORS below: a 16-transistor static
                     D flip-flop, plus a 12-transistor 2:1 mux for an enable and a 6-transistor gate for
                     a synchronous reset, 4 transistors for an asynchronous one)
  transistors        transistors_yosys + ff_transistors (used by the cost model)
  peak_macs_per_cycle, transistors_per_mac_per_cycle   (area per unit of throughput)
Numbers are technology-independent estimates (a generic gate count, not a placed 28 nm layout).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from compiler.errors import LowbitError
from hwsim.designs import DESIGNS
from hwsim.designs._fp16 import is_fp16_design
from rtl.gen.common import module_name, write_verilog
from rtl.sim import build_lock, build_root, make_config

# yosys's own CMOS costs for the gates it counts (kernel/cost.h), for cross-checking its total
GATE_TRANSISTORS = {
    "$_NOT_": 2, "$_NAND_": 4, "$_NOR_": 4, "$_AND_": 6, "$_OR_": 6, "$_ANDNOT_": 6, "$_ORNOT_": 6,
    "$_XOR_": 12, "$_XNOR_": 12, "$_AOI3_": 6, "$_OAI3_": 6, "$_AOI4_": 8, "$_OAI4_": 8, "$_MUX_": 12,
    "$_NMUX_": 10, "$_BUF_": 0, "$_DFF_P_": 16, "$_DFF_N_": 16,
}
DFF, ENABLE, SYNC_RESET, ASYNC_RESET = 16, 12, 6, 4


def ff_transistors(cell: str) -> int | None:
    """Transistor estimate for a yosys flip-flop cell type; None if `cell` is not a flip-flop."""
    m = re.match(r"^\$_(S?DFF|DFFE|SDFFE|SDFFCE|DFFSR|DFFSRE|ALDFF|ALDFFE)_([A-Z0-9]*)_$", cell)
    if not m:
        return None
    kind = m.group(1)
    t = DFF
    if "E" in kind[3:] or kind in ("DFFE", "SDFFE", "SDFFCE", "DFFSRE", "ALDFFE"):
        t += ENABLE
    if kind.startswith("SDFF"):
        t += SYNC_RESET
    if kind.startswith("DFFSR"):
        t += 2 * ASYNC_RESET
    elif kind == "DFF" and len(m.group(2)) == 3:  # $_DFF_PN0_ etc.: async reset
        t += ASYNC_RESET
    return t


def check_yosys() -> str:
    exe = shutil.which("yosys")
    if exe is None:
        raise LowbitError("yosys is not installed", "install it with `sudo apt-get install -y yosys`")
    return exe


def synthesize(
    design: str, params: dict | None = None, out_json: str | Path | None = None, timeout_s: int = 7200, reuse: bool = True,
    noshare: bool | None = None,
) -> dict:
    """Synthesize one array with yosys; returns the report dict (and writes it to out_json if given).

    reuse: take yosys's outputs from the work folder (build/rtl/synth/<module>/) when they were made
    from the identical Verilog text. noshare: `synth -noshare` (no SAT-based resource sharing; the
    default for the FP16 arrays, whose floating-point units that pass does not finish on in 8 GB)."""
    exe = check_yosys()
    cfg, _ = make_config(design, params)
    if noshare is None:
        noshare = is_fp16_design(design)
    top = module_name(cfg)
    work = build_root() / "synth" / (top + ("-noshare" if noshare else ""))
    with build_lock(work):
        return _synthesize_locked(design, cfg, top, work, out_json, timeout_s, reuse, exe, noshare)


def _synthesize_locked(design, cfg, top, work: Path, out_json, timeout_s, reuse, exe, noshare=False) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    src = write_verilog(cfg, work)
    script = (
        f"read_verilog {src.name}; synth -flatten{' -noshare' if noshare else ''} -top {top}; "
        "tee -o stat.txt stat; tee -o cmos.txt stat -tech cmos; tee -o stat.json stat -json"
    )
    t0 = time.time()
    done = work / "done.v"  # the source the results in `work` belong to
    if reuse and done.exists() and done.read_text() == src.read_text() and (work / "stat.json").exists():
        secs = float((work / "seconds.txt").read_text()) if (work / "seconds.txt").exists() else None
    else:
        with contextlib.suppress(FileNotFoundError):
            done.unlink()
        r = subprocess.run([exe, "-q", "-l", "yosys.log", "-p", script], cwd=work, capture_output=True, text=True, timeout=timeout_s)
        if r.returncode != 0:
            raise LowbitError(f"yosys failed on {top}: {(r.stderr or r.stdout).strip()[-300:]}", f"see {work / 'yosys.log'}")
        secs = time.time() - t0
        (work / "seconds.txt").write_text(f"{secs:.1f}")
        shutil.copyfile(src, done)
    stat = json.loads((work / "stat.json").read_text())
    mod = next(iter(stat["modules"].values()))
    cells = {k: int(v) for k, v in mod["num_cells_by_type"].items()}
    m = re.search(r"Estimated number of transistors:\s+(\d+)", (work / "cmos.txt").read_text())
    t_yosys = int(m.group(1)) if m else 0
    ff_t = 0
    ff_bits = 0
    unknown = {}
    for cell, n in cells.items():
        f = ff_transistors(cell)
        if f is not None:
            ff_bits += n
            if cell not in GATE_TRANSISTORS:
                ff_t += f * n
        elif cell not in GATE_TRANSISTORS:
            unknown[cell] = n
    gates_t = sum(GATE_TRANSISTORS[c] * n for c, n in cells.items() if c in GATE_TRANSISTORS)
    peak = cfg.macs_per_beat / cfg.cycles_per_beat
    total = t_yosys + ff_t
    report = {
        "design": design,
        "module": top,
        "config": cfg.to_dict(),
        "yosys": subprocess.run([exe, "-V"], capture_output=True, text=True).stdout.strip(),
        "seconds": round(secs, 1) if secs is not None else None,  # None: yosys run not timed
        "cells": cells,
        "cell_count": int(mod["num_cells"]),
        "ff_bits": ff_bits,
        "transistors_yosys": t_yosys,
        "transistors_gates_check": gates_t,
        "ff_transistors": ff_t,
        "transistors": total,
        "uncounted_cells": unknown,
        "peak_macs_per_cycle": peak,
        "transistors_per_mac_per_cycle": total / peak,
        "cells_per_mac_per_cycle": int(mod["num_cells"]) / peak,
    }
    if noshare:
        report["script"] = "synth -flatten -noshare"
    if out_json is not None:
        out = Path(out_json)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=out.parent, delete=False, suffix=".tmp") as f:
            json.dump(report, f, indent=1)
        Path(f.name).replace(out)
    return report


def report_path(design: str, bits: int, act: str = "a8", group: int = 128) -> Path:
    return Path(__file__).resolve().parent / "reports" / "synth" / f"{design}_w{bits}{act}g{group}.json"


# FP4 (E2M1 codes, MXFP4's group of 32) against INT4 at one small shape: yosys takes 20-60 s per array there
# (12-20 min at the default N=64). Kept in their own folder: the area model is fitted on reports/synth/*.json only.
FP4_SHAPE = dict(M=2, N=16, K=4, lanes=8, group=32, act="a8")
FP4_FORMATS = {"w4": dict(bits=4), "e2m1": dict(weight_format="e2m1")}


def fp4_report_path(design: str, fmt: str) -> Path:
    s = FP4_SHAPE
    return Path(__file__).resolve().parent / "reports" / "synth" / "fp4" / f"{design}_{fmt}{s['act']}g{s['group']}_m{s['M']}n{s['N']}.json"


# The table variants (ArrayConfig table, sym) of the design that takes them (Design.table_params: lut-tc) at the
# W2/W4 A8 G128 arrays of report_path: where the tables come from (built per beat, or streamed from the program's
# precompute) and their size (8 symmetrized entries or all 16). Their own folder too, so the area model's fit
# stays on the designs' own arrays.
LUT_VARIANTS = {"build-sym": dict(), "build-16": dict(sym=False), "stream-sym": dict(table="stream"), "stream-16": dict(table="stream", sym=False)}


def table_variant_design() -> str:
    return next(d.name for d in DESIGNS.values() if d.table_params)


def lut_variant_report_path(variant: str, bits: int, act: str = "a8", group: int = 128) -> Path:
    design = table_variant_design()
    return Path(__file__).resolve().parent / "reports" / "synth" / f"{design}-variants" / f"{design}-{variant}_w{bits}{act}g{group}.json"


def lut_variant_table(reports: dict[str, dict]) -> str:
    """Markdown table of the table variants' reports ({LUT_VARIANTS name: report}, one weight width): cells,
    flip-flop bits, transistors and 45 nm cell area, each over build-sym (today's array)."""
    from hwsim.cost.area import cells_area_um2

    ref = reports["build-sym"]
    ref_um2 = cells_area_um2(ref["cells"])["total_um2"]
    lines = ["| variant | module | cells | FF bits | transistors | area um^2 (45 nm cells) | area vs build-sym |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, r in reports.items():
        um2 = cells_area_um2(r["cells"])["total_um2"]
        lines.append(f"| {name} | {r['module']} | {r['cell_count']:,} | {r['ff_bits']:,} | {r['transistors']:,} | "
                     f"{um2:,.0f} | {um2 / ref_um2:.3f}x |")
    return "\n".join(lines)


def _format(c: dict) -> str:
    return "ternary" if c["ternary"] else "e2m1" if c.get("weight_format") == "e2m1" else f"w{c['bits']}"


def _variant(c: dict) -> str:
    """ " (stream, 16-entry)" etc. for a lut-tc table variant's config, "" for the default array."""
    parts = (["stream"] if c.get("table", "build") == "stream" else []) + ([] if c.get("sym", True) else [f"{1 << c['K']}-entry"])
    return f" ({', '.join(parts)})" if parts else ""


def baseline_design() -> str | None:
    """The registered baseline design (Design.baseline), the first if several."""
    return next((d.name for d in DESIGNS.values() if d.baseline), None)


def table(reports: list[dict]) -> str:
    """Markdown table of synthesis reports, with area per MAC/cycle and the ratio to the baseline design
    (`baseline_design()`) of the same weight bits."""
    ref = baseline_design()
    key = lambda c: (_format(c), c["act"])  # noqa: E731
    base = {key(r["config"]): r["transistors_per_mac_per_cycle"] for r in reports if r["design"] == ref}
    lines = [
        f"| design | config | cells | FF bits | transistors | peak MACs/cycle | transistors per MAC/cycle | vs {ref} |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in reports:
        c = r["config"]
        w = _format(c)
        b = base.get(key(c))
        ratio = f"{r['transistors_per_mac_per_cycle'] / b:.2f}x" if b else "-"
        lines.append(
            f"| {r['design']}{_variant(c)} | {w}{c['act']}g{c['group']} M{c['M']} N{c['N']} K{c['K']} | {r['cell_count']:,} | "
            f"{r['ff_bits']:,} | {r['transistors']:,} | {r['peak_macs_per_cycle']:.0f} | "
            f"{r['transistors_per_mac_per_cycle']:,.0f} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="yosys synthesis of the default arrays; prints the area table")
    ap.add_argument("--designs", default=",".join(DESIGNS))
    ap.add_argument("--bits", default="2,4")
    ap.add_argument("--rerun", action="store_true", help="synthesize even when a saved report exists")
    ap.add_argument("--fp4", action="store_true", help="the FP4 (E2M1) vs INT4 arrays at FP4_SHAPE instead")
    ap.add_argument("--lut-variants", action="store_true", help="lut-tc's table variants (LUT_VARIANTS) at --bits instead")
    args = ap.parse_args(argv)
    reports = []
    if args.lut_variants:
        for bits in (int(b) for b in args.bits.split(",")):
            per = {}
            for variant, kw in LUT_VARIANTS.items():
                p = lut_variant_report_path(variant, bits)
                if p.exists() and not args.rerun:
                    per[variant] = json.loads(p.read_text())
                else:
                    per[variant] = synthesize(table_variant_design(), dict(bits=bits, act="a8", group=128, **kw), out_json=p)
            print(f"W{bits}A8 G128\n{lut_variant_table(per)}\n")
        return 0
    if args.fp4:
        for design in args.designs.split(","):
            for fmt, kw in FP4_FORMATS.items():
                p = fp4_report_path(design, fmt)
                if p.exists() and not args.rerun:
                    reports.append(json.loads(p.read_text()))
                else:
                    reports.append(synthesize(design, {**FP4_SHAPE, **kw}, out_json=p))
        print(table(reports))
        return 0
    for design in args.designs.split(","):
        for bits in (int(b) for b in args.bits.split(",")):
            p = report_path(design, bits)
            if p.exists() and not args.rerun:
                reports.append(json.loads(p.read_text()))
            else:
                reports.append(synthesize(design, dict(bits=bits, act="a8", group=128), out_json=p))
    print(table(reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
