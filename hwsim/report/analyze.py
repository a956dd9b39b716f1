"""The report's numbers as plain data: every design and platform on a model's linears (`analyze`), and our
measurements of the papers' claims (`paper_comparison`, from each design record's `claims`), with the
prose that explains where they differ (`_reasons`).

The claim rows and the reasons name the three published designs as their papers do; this module is the one
place outside hwsim/designs that does (tests/hwsim/test_design_registry.py).
"""

from __future__ import annotations

from compiler.errors import LowbitError
from hwsim.arrays import simulate_shape
from hwsim.config import ArrayConfig
from hwsim.cost import area as area_mod
from hwsim.cost import energy as energy_mod
from hwsim.cost import roofline as rl
from hwsim.designs import DESIGNS
from hwsim.memory import MemoryConfig

ARRAY_SHAPE = dict(M=2, N=64, K=4, lanes=8)  # the paper's elongated tile; all committed synthesis reports use it
DATAPATH_PARTS = ("adds", "mults", "muxes", "registers")
PAPER_BITS = (2, 4)  # weight bits of the synthesized configurations the claims are measured at (A8, G128)
PAPER_GROUP = 128


E2M1_FORMATS = ("mxfp4", "nvfp4")  # (compiler.quant.floatfmt's): the arrays run their codes as E2M1 weights


def design_config(design: str, lin: rl.Linear) -> ArrayConfig:
    fmt = "e2m1" if lin.fp in E2M1_FORMATS else "int"
    return ArrayConfig(design=design, bits=lin.bits, ternary=lin.ternary, act=lin.act, group=lin.group, weight_format=fmt, **ARRAY_SHAPE)


def check_fits(ml: rl.ModelLinears, designs: list[str]) -> None:
    """LowbitError (one line naming the layer's format and the fix) when a linear does not fit an array."""
    for d in designs:
        for lin in ml.linears:
            try:
                design_config(d, lin)
            except ValueError as e:
                fmt = f"{'ternary' if lin.ternary else lin.fp or f'W{lin.bits}'} {lin.act}, group {lin.group}"
                raise LowbitError(f"{ml.quant}: layer {lin.name} ({fmt}) does not fit the {d} array: {e}",
                                  "report a format the arrays run: 1..4-bit weights or mxfp4 / nvfp4, with a8 or a16 activations (e.g. --quant w4g128a8)") from None


def analyze(ml: rl.ModelLinears, designs: list[str], prefill: int = 128, memory: MemoryConfig | None = None, node: str = "28nm",
            platforms: tuple[str, ...] = ("this-cpu", "h100-sxm"), progress=None) -> dict:
    """All numbers of the report on the linears `ml` as plain data (see hwsim.report.build_report)."""
    check_fits(ml, designs)
    mem = memory or MemoryConfig()
    plats = {p: rl.platform(p) for p in platforms}
    clock = mem.clock_ghz * 1e9
    layers = []
    designs_out = {}
    total_steps = len(designs) * len(ml.linears) * 2
    step = 0
    for d in designs:
        cfg0 = design_config(d, ml.linears[0])
        tot = {"prefill_s": 0.0, "decode_s": 0.0, "prefill_cycles": 0, "decode_cycles": 0, "prefill_stall_cycles": 0,
               "decode_stall_cycles": 0, "prefill_macs": 0, "decode_macs": 0}
        parts = (*DATAPATH_PARTS, "sram_weight", "sram_act", "sram_out", "dram", "total")
        en = {ph: {k: 0.0 for k in parts} for ph in ("prefill", "decode")}
        for lin in ml.linears:
            cfg = design_config(d, lin)
            for ph, M in (("prefill", prefill), ("decode", 1)):
                r = simulate_shape(cfg, M, lin.N, lin.K, mem)
                e = energy_mod.layer_energy_pj(cfg, r.activity, node, mem)
                layers.append({
                    "design": d, "layer": lin.name, "phase": ph, "M": M, "N": lin.N, "K": lin.K, "count": lin.count,
                    "cycles": r.cycles, "compute_cycles": r.compute_cycles, "stall_cycles": r.stall_cycles, "tiles": r.tiles,
                    "utilization": r.utilization, "time_us": r.cycles / clock * 1e6, "macs": r.macs,
                    "dram_bytes": r.activity["dram_bytes"], "dram_bytes_weights": r.activity["dram_bytes_weights"],
                    "energy_uj": e["total"] / 1e6, **{f"e_{k}_uj": v / 1e6 for k, v in e.items() if k != "total"},
                })
                tot[f"{ph}_s"] += lin.count * r.cycles / clock
                tot[f"{ph}_cycles"] += lin.count * r.cycles
                tot[f"{ph}_stall_cycles"] += lin.count * r.stall_cycles
                tot[f"{ph}_macs"] += lin.count * r.macs
                for k in en[ph]:
                    en[ph][k] += lin.count * e[k] / 1e6
                step += 1
                if progress:
                    progress(step, total_steps)
        ar = area_mod.array_area(cfg0, node)
        mar = area_mod.memory_area(mem, node)
        A = mem.arrays
        peak = A * cfg0.macs_per_beat / cfg0.cycles_per_beat
        designs_out[d] = {
            "config": cfg0.to_dict(),
            "arrays": A,
            "area": {"logic_mm2": A * ar["logic_um2"] / 1e6, "ff_mm2": A * ar["ff_um2"] / 1e6, "array_mm2": A * ar["total_um2"] / 1e6,
                     "sram_mm2": A * mar["total_um2"] / 1e6, "source": ar["source"]},
            "peak_macs_per_cycle": peak,
            "peak_tops": 2 * peak * clock / 1e12,
            "tops_per_mm2_array": 2 * peak * clock / 1e12 / (A * ar["total_um2"] / 1e6),
            **tot,
            "decode_tokens_per_s": 1.0 / tot["decode_s"],
            "prefill_tokens_per_s": prefill / tot["prefill_s"],
            "prefill_utilization": tot["prefill_macs"] / (tot["prefill_cycles"] * peak),
            "decode_utilization": tot["decode_macs"] / (tot["decode_cycles"] * peak),
            "energy_uj": en,
            "decode_uj_per_token": en["decode"]["total"],
            "decode_datapath_uj_per_token": sum(en["decode"][k] for k in DATAPATH_PARTS),
            "prefill_pj_per_mac": en["prefill"]["total"] * 1e6 / tot["prefill_macs"],
            "prefill_datapath_pj_per_mac": sum(en["prefill"][k] for k in DATAPATH_PARTS) * 1e6 / tot["prefill_macs"],
        }
    plat_rows = []
    for pname, p in plats.items():
        for ph, M in (("prefill", prefill), ("decode", 1)):
            t = 0.0
            sz = sp = 0.0
            for lin in ml.linears:
                rt = rl.roofline_time(lin, M, p)
                t += lin.count * rt["time_s"]
                sz += lin.count * rt["scale_zero_bytes"]
                sp += lin.count * rt["sparse_bytes"]
                layers.append({"design": pname, "layer": lin.name, "phase": ph, "M": M, "N": lin.N, "K": lin.K, "count": lin.count,
                               "time_us": rt["time_s"] * 1e6, "macs": M * lin.N * lin.K, "bound": rt["bound"],
                               "dram_bytes": rt["bytes"], "intensity": rt["intensity"]})
            plat_rows.append({"platform": pname, "name": p.name, "phase": ph, "time_s": t, "scale_zero_bytes": sz, "sparse_bytes": sp,
                              "peak_ops": p.peak(ml.linears[0].act), "bandwidth": p.bandwidth, "source": p.source})
    kv_rows = [r for p in plats.values() for r in rl.decode_vs_context(ml, p)]
    return {
        "blocks": blocks(ml, designs, layers, prefill, mem, node),
        "kv": ml.kv, "kv_decode": kv_rows,
        "model": ml.model, "family": ml.family, "quant": ml.quant, "source": ml.source, "prefill": prefill, "node": node,
        "memory": mem.to_dict(), "linears": [rl.linear_dict(l) for l in ml.linears], "float_linears": ml.float_linears,
        "designs": designs_out, "layers": layers, "platforms": plat_rows,
    }


# ----------------------------------------------------------------------------------------------------
# Whole blocks: linears, attention matmuls, vector unit


def blocks(ml: rl.ModelLinears, designs: list[str], layers: list[dict], prefill: int, mem: MemoryConfig, node: str) -> dict | None:
    """One transformer block per design and phase, split into the linears (the arrays; each role's share of its
    layers), the attention matmuls (on the array, hwsim.cost.vector) and the vector unit (norms, gate, Shiftmax,
    PV's rescale, on the design's lanes), as `--vector-unit all` runs it. Prefill: S = T = prefill; decode: one
    row against T = prefill + 1 keys. None without a block shape (an artifact's linears); {"error"} when the
    unit cannot take the model's rows."""
    from hwsim.cost import vector as cv

    b = ml.block
    if not b:
        return None
    try:
        rows, areas = [], {}
        for d in designs:
            cfg = design_config(d, ml.linears[0])
            vu = cv.VectorUnit(cv.design_lanes(d), b["norm"], b["gate"])
            areas[d] = cv.vector_area(vu, b["hidden"], prefill + 1, node, b["head_dim"] if b["causal"] else None)  # rope and KV writes: decoders
            for ph, S, T in (("prefill", prefill, prefill), ("decode", 1, prefill + 1)):
                mine = [l for l in layers if l["design"] == d and l["phase"] == ph]
                share = {l["layer"]: l["count"] / b["layers"] for l in mine}
                lin_c = sum(l["cycles"] * share[l["layer"]] for l in mine)
                lin_e = sum(l["energy_uj"] * share[l["layer"]] for l in mine)
                t = cv.total_costs(cv.block_shapes(b, S, T), vu, cfg, mem, node)
                am, v = t["attn_matmul"], t["vector"]
                rows.append({"design": d, "phase": ph, "S": S, "T": T, "vector_lanes": vu.lanes,
                             "linears_cycles": lin_c, "linears_uj": lin_e,
                             "attn_matmul_cycles": am["cycles"], "attn_matmul_uj": am["energy_pj"] / 1e6,
                             "vector_cycles": v["cycles"], "vector_uj": v["energy_pj"] / 1e6,
                             "total_cycles": lin_c + am["cycles"] + v["cycles"], "total_uj": lin_e + (am["energy_pj"] + v["energy_pj"]) / 1e6,
                             **{f"{op}_cycles": x["cycles"] for op, x in t["ops"].items()}})
    except LowbitError as e:
        return {"block": b, "error": str(e)}
    return {"block": b, "rows": rows, "vector_area": areas}


# ----------------------------------------------------------------------------------------------------
# The papers' claims


def _measure(design: str, bits: int, ml: rl.ModelLinears, prefill: int, mem: MemoryConfig, node: str) -> dict:
    """One design at a synthesized configuration (ARRAY_SHAPE, A8, G128) on the model's linears whose K the group divides."""
    cfg = ArrayConfig(design=design, bits=bits, act="a8", group=PAPER_GROUP, **ARRAY_SHAPE)
    ar = area_mod.array_area(cfg, node)
    peak = cfg.macs_per_beat / cfg.cycles_per_beat
    e_dp = e_all = 0.0
    macs = cyc = 0
    for lin in ml.linears:
        if lin.K % PAPER_GROUP:
            continue
        r = simulate_shape(cfg, prefill, lin.N, lin.K, mem)
        e = energy_mod.layer_energy_pj(cfg, r.activity, node, mem)
        e_dp += lin.count * sum(e[k] for k in DATAPATH_PARTS)
        e_all += lin.count * e["total"]
        macs += lin.count * r.macs
        cyc += lin.count * r.cycles
    return {"area_mm2": ar["total_um2"] / 1e6, "ff_share": ar["ff_um2"] / ar["total_um2"], "source": ar["source"],
            "peak_macs_per_cycle": peak, "density_macs_per_cycle_mm2": peak / (ar["total_um2"] / 1e6),
            "datapath_pj_per_mac": e_dp / macs, "total_pj_per_mac": e_all / macs, "prefill_cycles": cyc}


def _claim_rows(design: str, claim, w: str, per: dict, ml: rl.ModelLinears, prefill: int, seen: set) -> list[dict]:
    """The rows of one measured claim at one weight width (w2, w4). `seen` holds the metrics an earlier row of
    the same width described in full; later rows abbreviate their "how"."""
    D, V = per[design], per[claim.versus]
    label = DESIGNS[design].label
    versus = claim.versus_as or DESIGNS[claim.versus].label
    pair, fmt, first = f"{label} vs {versus}", f"W{w[1:]}A8", claim.metric not in seen
    seen.add(claim.metric)
    if claim.metric == "density":
        how = "peak MACs/cycle per mm^2 of array (yosys cells -> NanGate45 areas)" if first else "peak MACs/cycle per mm^2"
        return [{"claim": f"{pair}, compute density ({fmt})", "paper": claim.paper,
                 "ours": D["density_macs_per_cycle_mm2"] / V["density_macs_per_cycle_mm2"], "how": how}]
    if claim.metric == "energy":
        word = claim.metric_as or "energy"
        how = f"array pJ/MAC, {ml.model} linears, prefill M={prefill}" if first else f"array pJ/MAC, prefill M={prefill}"
        return [{"claim": f"{pair}, {word} ({fmt}, datapath)", "paper": claim.paper,
                 "ours": V["datapath_pj_per_mac"] / D["datapath_pj_per_mac"], "how": how},
                {"claim": f"{pair}, {word} ({fmt}, with SRAM+DRAM)", "paper": claim.paper,
                 "ours": V["total_pj_per_mac"] / D["total_pj_per_mac"], "how": "same, including buffers and DRAM"}]
    if claim.metric == "speed_area":
        return [{"claim": f"{pair}, speed at equal area ({fmt})", "paper": claim.paper,
                 "ours": D["density_macs_per_cycle_mm2"] / V["density_macs_per_cycle_mm2"],
                 "how": "MACs/cycle per mm^2 (same M x N x K array: cycles are equal)"}]
    if claim.metric == "speed_shape":
        return [{"claim": f"{pair}, speed at equal array shape ({fmt})", "paper": claim.paper,
                 "ours": V["prefill_cycles"] / D["prefill_cycles"], "how": "simulated cycles, same tile shape"}]
    raise ValueError(f"design {design}: claim metric {claim.metric!r} is not one the report measures")


def paper_comparison(ml: rl.ModelLinears, prefill: int, mem: MemoryConfig, node: str) -> dict:
    """Our measured ratios at the synthesized configurations (M2 N64 K4, A8, G128; W2 and W4) of every
    registered design, on the model's linears, next to the claims of each design record.

    Rows per width: the measured claims (density, energy, speed_area, speed_shape; a claim against a design
    that is not registered is skipped), claimed ones first; then the unmeasured claims (ours = None); then
    the area variants (`area_variant:<v>`: model_area_um2 of the variant over that of the design)."""
    if not any(lin.K % PAPER_GROUP == 0 for lin in ml.linears):
        raise LowbitError(f"no linear layer of {ml.model} has K a multiple of {PAPER_GROUP}, the synthesized group size",
                          "report a model whose layer widths are multiples of 128")
    out = {f"w{bits}": {d: _measure(d, bits, ml, prefill, mem, node) for d in DESIGNS} for bits in PAPER_BITS}
    rows = []
    for w, per in out.items():
        block, seen = [], set()
        for d, rec in DESIGNS.items():
            for c in rec.claims:
                if c.metric == "unmeasured" or c.metric.startswith(("area_variant:", "netlist_variant:")) or c.versus not in DESIGNS:
                    continue
                block += _claim_rows(d, c, w, per, ml, prefill, seen)
        rows += sorted(block, key=lambda r: r["paper"] == "(not claimed)")
    for d, rec in DESIGNS.items():
        for c in rec.claims:
            if c.metric == "unmeasured":
                rows.append({"claim": f"{rec.label} vs {c.versus}", "paper": c.paper, "ours": None,
                             "how": c.note or "not measured: not among our RTL designs"})
    for d, rec in DESIGNS.items():
        for c in rec.claims:
            if not c.metric.startswith("area_variant:"):
                continue
            v = c.metric.split(":", 1)[1]
            for bits in PAPER_BITS:
                cfg = ArrayConfig(design=d, bits=bits, act="a8", group=PAPER_GROUP, **ARRAY_SHAPE)
                ratio = area_mod.model_area_um2(cfg, variant=v) / area_mod.model_area_um2(cfg)
                out[f"w{bits}"][d][f"{v}_area_ratio"] = ratio
                rows.append({"claim": f"{rec.label} vs {c.source} (W{bits}A8)", "paper": c.paper, "ours": ratio,
                             "how": f"estimate: component model: {rec.area_variants[v]}"})
    for d, rec in DESIGNS.items():  # the same kind of gain measured from two netlists of our RTL
        for c in rec.claims:
            if not c.metric.startswith("netlist_variant:"):
                continue
            num, den = c.metric.split(":", 1)[1].split("/")
            for bits in PAPER_BITS:
                ratio = area_mod.variant_netlist_ratio(d, bits, num, den)
                if ratio is not None:
                    rows.append({"claim": f"{rec.label} vs {c.source} (W{bits}A8, netlists)", "paper": c.paper, "ours": ratio,
                                 "how": f"measured: yosys netlists {num} / {den}, cell area (rtl/reports/synth/{d}-variants)"})
    return {"per_design": out, "rows": rows, "reasons": _reasons(out)}


def _reasons(out: dict) -> list[str]:
    """Why our ratios differ from the papers'; a paragraph about particular designs appears only when they are registered."""
    w2, w4 = out["w2"], out["w4"]
    have = set(w4)
    r = []
    if "mac" in have:
        r.append(
            f"The MAC baseline here multiplies int8 activations by weights dequantized to (B+1+16)-bit integers (the 16-bit "
            f"dyadic scale mantissa folded into the weight), so its PE multiplier is 8 x {4 + 1 + 16} bits at W4: "
            f"{w4['mac']['area_mm2']:.3f} mm^2 for 512 MACs/cycle. The papers' MAC baselines are FP16/INT8 tensor cores "
            f"fed by a separate dequantization step; ours is an integer-only, bit-exact equivalent, which changes the ratio."
        )
    if {"lut-tc", "mixpe", "mac"} <= have:
        r.append(
            f"Our lut-tc is bit-serial (one weight plane per cycle): at W{4} it delivers {w4['lut-tc']['peak_macs_per_cycle']:.0f} "
            f"MACs/cycle vs {w4['mixpe']['peak_macs_per_cycle']:.0f} for mixpe and mac at the same M x N x K, and "
            f"{w4['lut-tc']['ff_share'] * 100:.0f}% of its area is flip-flops (tables, plane-major weights, Horner partial "
            f"sums, shadow bank and Y registers; generic DFF+enable cells, no register files or latches). Its density "
            f"advantage over mac is therefore {w2['lut-tc']['density_macs_per_cycle_mm2'] / w2['mac']['density_macs_per_cycle_mm2']:.1f}x at W2 "
            f"and {w4['lut-tc']['density_macs_per_cycle_mm2'] / w4['mac']['density_macs_per_cycle_mm2']:.1f}x at W4, not >10x; "
            f"mixpe's shift-and-add PEs are denser still at these shapes."
        )
        r.append(
            "The epilogue (dyadic dequantization lanes, shadow bank, Y registers) is common to all three designs and of "
            "similar size in each (mac's lanes have no multiplier, lut-tc's add the zero-point correction); it is a larger "
            "share of the small arrays (lut-tc, mixpe) than of mac, which compresses the ratios. The papers' arrays are "
            "larger (MixPE: 64x64 PEs) and amortize such overheads."
        )
    if {"mixpe", "mac"} <= have:
        r.append(
            "MixPE's 2.6x speedup is measured against other accelerators (ANT, BitFusion, OLAccel, INT8/FP16 arrays) at the "
            "system level; at an equal array shape our mixpe and mac take exactly the same cycles (one K-chunk per cycle, "
            "same epilogue), so any speedup can only come at equal area (more PEs in the same silicon)."
        )
    r.append(
        "Energy with SRAM and DRAM included is dominated by memory traffic, which is the same for all designs at "
        "the same weight format; the datapath ratios isolate what the PE design changes. Energy figures are 45 nm "
        "public per-op numbers scaled to the node (hwsim.cost.energy), not a power analysis of our netlists."
    )
    return r
