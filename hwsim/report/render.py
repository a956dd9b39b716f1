"""Writing a report folder from analyze's data: the PNG plots (hwsim.report.plots), the CSV tables, report.json,
and report.md / report.html from one `Doc`."""

from __future__ import annotations

import json
from pathlib import Path

from hwsim.cost import area as area_mod
from hwsim.cost import energy as energy_mod
from hwsim.report import plots
from hwsim.report.analyze import DATAPATH_PARTS, E2M1_FORMATS
from hwsim.report.doc import Doc, write_csv
from hwsim.report.sweep import FIELDS as SWEEP_FIELDS


def write_report(root: Path, data: dict, sweep_rows: list[dict], designs: list[str], elapsed: float) -> None:
    """Write every file of the report into the folder `root` (analyze's data with the paper comparison, area fit
    and holdout errors added; the sweep's rows, possibly none)."""
    D = data["designs"]
    node = data["node"]
    mem = data["memory"]
    layers = data["layers"]
    lin_names = [l["name"] for l in data["linears"]]

    # ---- plots
    roofs = [(p["name"], p["peak_ops"], p["bandwidth"]) for p in data["platforms"] if p["phase"] == "decode"]
    for d in designs:
        roofs.append((f"{d} ({mem['arrays']} array{'s' if mem['arrays'] > 1 else ''}, {mem['dram_gbps']:.0f} GB/s)",
                      D[d]["peak_tops"] * 1e12, mem["dram_gbps"] * 1e9))
    points = []
    for l in layers:
        if l["design"] in D:
            ops = 2 * l["macs"]
            points.append((f"{l['design']} {l['phase']}", ops / l["dram_bytes"], ops / (l["time_us"] * 1e-6),
                           "o" if l["phase"] == "decode" else "s", plots.design_color(l["design"])))
    plat_names = [p for p in dict.fromkeys(p["platform"] for p in data["platforms"])]
    for i, pn in enumerate(plat_names):
        for l in layers:
            if l["design"] == pn:
                points.append((f"{pn} {l['phase']} (roofline)", l["intensity"], 2 * l["macs"] / (l["time_us"] * 1e-6),
                               "^" if l["phase"] == "decode" else "v", plots.PLAT_COLORS[i % 4]))
    plots.roofline(root / "roofline.png", {"roofs": roofs, "points": points,
                                           "title": f"{data['model']} {data['quant']}: linears, decode (M=1) and prefill (M={data['prefill']})"})
    series = {}
    for ph in ("decode", "prefill"):
        series[ph] = {}
        for d in designs + plat_names:
            series[ph][d] = [next(l["time_us"] for l in layers if l["design"] == d and l["layer"] == n and l["phase"] == ph)
                             for n in lin_names]
    plots.layer_time(root / "layer_time.png", lin_names, series)
    area = {d: {"logic": D[d]["area"]["logic_mm2"], "flip-flops": D[d]["area"]["ff_mm2"]} for d in designs}
    dp = {d: {k: D[d]["energy_uj"]["prefill"][k] * 1e6 / D[d]["prefill_macs"] for k in DATAPATH_PARTS} for d in designs}
    tok = {d: {"datapath": sum(D[d]["energy_uj"]["decode"][k] for k in DATAPATH_PARTS) / 1e3,
               "SRAM": sum(D[d]["energy_uj"]["decode"][k] for k in ("sram_weight", "sram_act", "sram_out")) / 1e3,
               "DRAM": D[d]["energy_uj"]["decode"]["dram"] / 1e3} for d in designs}
    plots.stacked_panels(root / "area_energy.png", [
        (f"array area ({node}; SRAM {D[designs[0]]['area']['sram_mm2']:.2f} mm^2 more, same for all)", "mm^2", area),
        (f"datapath energy per MAC, prefill M={data['prefill']} ({node})", "pJ / MAC", dp),
        ("energy per decoded token (linears)", "mJ", tok),
    ])
    if sweep_rows:
        plots.pareto(root / "pareto.png", sweep_rows,
                     title=f"design space on {data['model']} linears: array area vs prefill time (M={data['prefill']})")
        write_csv(root / "sweep.csv", sweep_rows, SWEEP_FIELDS)

    # ---- tables
    write_csv(root / "layers.csv", layers)
    write_csv(root / "designs.csv", [{"design": d, **{k: v for k, v in D[d].items() if not isinstance(v, dict)},
                                       **{f"area_{k}": v for k, v in D[d]["area"].items()}} for d in designs])
    write_csv(root / "platforms.csv", data["platforms"])
    write_csv(root / "paper_vs_ours.csv", data["paper"]["rows"])
    (root / "report.json").write_text(json.dumps({**data, "sweep": sweep_rows, "elapsed_s": elapsed}, indent=1, default=str))

    doc = Doc()
    doc.h(1, f"lowbit cost report: {data['model']} ({data['quant']})")
    doc.p(f"Source: {data['source']}. Quantized linears only ({sum(l['count'] for l in data['linears'])} layers, "
          f"{sum(l['N'] * l['K'] * l['count'] for l in data['linears']) / 1e6:.1f} M weights); attention score/context products, "
          f"norms and activations are not in these totals (the block table counts them on the vector unit). Float linears left out: "
          f"{', '.join(f'{n} [{a}x{b}]' for n, a, b in data['float_linears']) or 'none'}. Decode = one token (M=1); "
          f"prefill = {data['prefill']} tokens. Node {node}, {mem['arrays']} array(s) per design at {mem['clock_ghz']} GHz sharing "
          f"DRAM {mem['dram_gbps']} GB/s, SRAM weight/act/out {mem['weight_sram_kib']}/{mem['act_sram_kib']}/{mem['out_sram_kib']} KiB "
          f"per array.")
    doc.h(2, "Designs on this model")
    hdr = ["design", "array", "area mm^2 (array + SRAM)", "peak TOPS", "TOPS/mm^2 (array)", "prefill ms", "prefill util",
           "decode ms/token", "decode tokens/s", "decode mJ/token", "of which datapath mJ", "prefill pJ/MAC", "area source"]
    rows = []
    for d in designs:
        x = D[d]
        c = x["config"]
        rows.append([d, f"M{c['M']} N{c['N']} K{c['K']} W{c['bits']}{c['act']} G{c['group']}",
                     f"{x['area']['array_mm2']:.3f} + {x['area']['sram_mm2']:.2f}", x["peak_tops"], x["tops_per_mm2_array"],
                     x["prefill_s"] * 1e3, x["prefill_utilization"], x["decode_s"] * 1e3, x["decode_tokens_per_s"],
                     x["decode_uj_per_token"] / 1e3, x["decode_datapath_uj_per_token"] / 1e3, x["prefill_pj_per_mac"], x["area"]["source"]])
    doc.table(hdr, rows)
    w = {d: D[d]["energy_uj"]["prefill"] for d in designs}
    doc.p(f"Reading the table: {mem['arrays']} array(s) of each design at the paper's elongated tile (M=2 rows). Decode (M=1) uses one of the "
          "two rows; lut-tc is bit-serial (B cycles per K-chunk) so it is compute-bound where mixpe and mac are DRAM-bound. "
          "In prefill every pair of rows re-reads the column block's weights from the weight SRAM, so SRAM reads are the largest part of "
          "the energy per MAC (" + ", ".join(f"{d}: {w[d]['sram_weight'] / w[d]['total'] * 100:.0f}% of prefill energy" for d in designs)
          + "); decode energy is DRAM (weights, scales and zero points) for every design.")
    fps = {l.get("fp") or "codebook" for l in data.get("linears", []) if l.get("codebook")}
    e2m1 = sorted(fps & set(E2M1_FORMATS))
    coded = sorted(fps - set(E2M1_FORMATS))
    if e2m1:
        doc.p(f"The {', '.join(e2m1)} layers run on the arrays' E2M1 weight format (each code as the integer 2 v in -12..12, no zero "
              "point, the scale halved in the dyadic epilogue: lut-tc reads five offset-binary bit-planes, mixpe adds at most two "
              "shifted copies per code, mac multiplies), as `lowbit compile --target D` builds them.")
    if coded:
        doc.p(f"The {', '.join(coded)} layers are costed on the arrays above as integer codes of their width; the arrays do not run them "
              "(lowbit compile refuses accelerator targets for codebook weights other than mxfp4 / nvfp4), so those rows are what the "
              "formats would cost on an array that decoded them, not a measured path.")
    doc.h(2, "CPU / GPU rooflines on the same linears")
    sparse = any(p.get("sparse_bytes") for p in data["platforms"])
    doc.table(["platform", "phase", "time ms", "of which scale+zero bytes (MB)", *(["of which sparse outliers (MB)"] if sparse else []),
               "peak Tops/s", "bandwidth GB/s", "source"],
              [[p["name"], p["phase"], p["time_s"] * 1e3, p["scale_zero_bytes"] / 1e6, *([p["sparse_bytes"] / 1e6] if sparse else []),
                p["peak_ops"] / 1e12, p["bandwidth"] / 1e9, p["source"]]
               for p in data["platforms"]])
    if sparse:
        doc.p("Sparse outliers (dense-and-sparse layers, 4 bytes each: an fp16 value and an int16 column) are read with the layer on "
              "these platforms; on the accelerator designs the side matrix runs on the host (a host op of the program), outside the array's figures.")
    if data.get("kv_decode"):
        kv = data["kv"]
        ctxs = sorted({r["context"] for r in data["kv_decode"]})
        by = {}
        for r in data["kv_decode"]:
            by.setdefault((r["platform"], r["kv"]), {})[r["context"]] = r
        doc.h(2, "Decode per token vs context: weights + KV cache")
        doc.p(f"The KV cache: {kv['layers']} layers x {kv['kv_heads']} KV heads x head_dim {kv['head_dim']}, keys and values; fp8 / int8 / int4 / int2 "
              f"codes carry an fp16 scale per 32 values, per N with -gN (lowbit compile --kv; this artifact's cache: {kv.get('format', 'f32')}). Bandwidth-bound "
              "time of one decode step: the quantized linears' bytes plus context x the cache's bytes per token.")
        doc.table(["platform", "KV format", "KV bytes/token", *[f"ms @ {c}" for c in ctxs], f"KV share @ {ctxs[-1]}"],
                  [[plat, fmt, next(iter(rows.values()))["kv_bytes_per_token"], *[rows[c]["time_s"] * 1e3 for c in ctxs], f"{rows[ctxs[-1]]['kv_share'] * 100:.0f}%"]
                   for (plat, fmt), rows in by.items()])
    _blocks(doc, data, root)
    doc.img("roofline.png", "Roofline: platforms and designs (lines), each linear layer (markers) for decode and prefill")
    doc.h(2, "Paper claims vs our measurements")
    doc.table(["claim", "paper", "ours", "how we measure"],
              [[r["claim"], r["paper"], (f"{r['ours']:.2f}x" if r["ours"] is not None else "-"), r["how"]] for r in data["paper"]["rows"]])
    doc.p("Why ours differ:")
    doc.ul(data["paper"]["reasons"])
    pd = data["paper"]["per_design"]
    doc.table(["config", "array mm^2", "flip-flop share", "peak MACs/cycle", "MACs/cycle/mm^2", "datapath pJ/MAC", "total pJ/MAC", "area source"],
              [[f"{d} W{b[1:]}A8", x["area_mm2"], x["ff_share"], x["peak_macs_per_cycle"], x["density_macs_per_cycle_mm2"],
                x["datapath_pj_per_mac"], x["total_pj_per_mac"], x["source"]] for b in pd for d, x in pd[b].items()])
    doc.h(2, "Per-layer time")
    doc.img("layer_time.png", "Time per layer instance, decode and prefill, designs and platforms")
    lr = []
    for l in layers:
        if l["design"] in D:
            lr.append([l["design"], l["layer"], l["phase"], f"{l['M']}x{l['N']}x{l['K']}", l["count"], l["cycles"], l["stall_cycles"],
                       l["utilization"], l["time_us"], l["energy_uj"]])
    doc.table(["design", "layer", "phase", "MxNxK", "count", "cycles", "stall cycles", "util", "us", "uJ"], lr)
    doc.h(2, "Area and energy")
    doc.img("area_energy.png", "Array area by part, datapath energy per MAC by part, and energy per decoded token (datapath, SRAM, DRAM)")
    fit = data["area_fit"]
    doc.p(f"Area: yosys generic cells of our RTL -> NanGate FreePDK45 X1 cell areas, scaled to {node} by (L/45nm)^2; an estimate "
          f"from generic cells, not a PDK layout. SRAM: 6T bit cell / 0.7 array efficiency. Configurations without a synthesis "
          f"report use a component model fitted on the {len(fit['errors'])} reports (max relative error {fit['max_abs_rel_err'] * 100:.1f}%; "
          f"flip-flop bits counted from the RTL structure agree with yosys within "
          f"{max(abs(e['ff_bits_model'] - e['ff_bits_yosys']) for e in fit['errors'])} bits).")
    ho = area_mod.holdout_errors()
    if ho:
        doc.p(f"Component model against {len(ho)} held-out yosys reports (other shapes, A16, other groups; not used in the fit): "
              f"max relative error {max(abs(e['rel_err']) for e in ho) * 100:.1f}%. The model extrapolates beyond these for the "
              "largest sweep shapes.")
        doc.table(["held-out config", "yosys um^2 (45nm)", "model um^2", "error", "flip-flop bits model / yosys"],
                  [[e["config"], e["synth_um2"], e["model_um2"], f"{e['rel_err'] * 100:+.1f}%", f"{e['ff_bits_model']} / {e['ff_bits_yosys']}"]
                   for e in ho])
    doc.table(["area constant", "value", "unit", "source"],
              [[r["name"], r["value"], r["unit"], r["source"]] for r in area_mod.constants_table(node)])
    doc.table(["energy constant", "value at 45 nm", "unit", "source"],
              [[r["name"], r["value_45nm"], r["unit"], r["source"]] for r in energy_mod.constants_table(node)])
    ed = []
    for d in designs:
        for ph in ("decode", "prefill"):
            e = D[d]["energy_uj"][ph]
            ed.append([d, ph, *[e[k] for k in (*DATAPATH_PARTS, "sram_weight", "sram_act", "sram_out", "dram", "total")]])
    doc.table(["design", "phase", "adds", "mults", "muxes", "registers", "SRAM w", "SRAM a", "SRAM o", "DRAM", "total (uJ)"], ed)
    if sweep_rows:
        good = [r for r in sweep_rows if "error" not in r]
        doc.h(2, "Design-space sweep")
        doc.p(f"{len(good)} configurations (design x array shape x weight bits x activation mode x group size) on the same linears; "
              f"full table in sweep.csv. Pareto front on (array area, prefill time):")
        doc.img("pareto.png", "Design space: array area vs prefill time, Pareto front")
        front = [r for r in good if r.get("pareto")]
        doc.table(["design", "array", "bits", "act", "group", "area mm^2", "prefill ms", "decode tokens/s", "decode uJ/token", "area source"],
                  [[r["design"], f"{r['M']}x{r['N']}", r["bits"], r["act"], r["group"], r["area_mm2"], r["prefill_s"] * 1e3,
                    r["decode_tokens_per_s"], r["decode_energy_uj"], r["area_source"]] for r in front])
    doc.h(2, "How these numbers are made")
    doc.ul([
        "Cycles: hwsim.arrays, the RTL's job timing (tests/hwsim compare every input and output beat with the cocotb simulation) "
        "plus hwsim.memory's double-buffered DRAM model (stalls when DRAM cannot keep up).",
        "Values: hwsim is bit-exact with hwsim.golden.tile_y (the RTL's definition); this report uses timing and activity only.",
        "Energy: per-op figures (Horowitz ISSCC 2014; Han et al. ISCA 2016) x hwsim's activity counts; totals are the sum of the parts.",
        f"Generated in {elapsed:.1f} s.",
    ])
    (root / "report.md").write_text(doc.markdown())
    (root / "report.html").write_text(doc.html(root, f"lowbit report {data['model']}"))


def _blocks(doc: Doc, data: dict, root: Path) -> None:
    """The per-block split (analyze.blocks): linears, attention matmuls, vector unit; blocks.csv."""
    bl = data.get("blocks")
    if not bl:
        return
    doc.h(2, "One transformer block: linears, attention matmuls, vector unit")
    b = bl["block"]
    if "error" in bl:
        doc.p(f"Not costed: {bl['error']}")
        return
    write_csv(root / "blocks.csv", bl["rows"])
    doc.p(f"One block of {b['layers']} ({b['hidden']} wide, {b['heads']} heads of {b['head_dim']}, {b['norm']}, {b['gate']} over {b['inter']}) as "
          "`lowbit compile --vector-unit all` runs it: the linears on the array (each role once), QK^T and PV on the same array as two exact "
          "W4 passes of the int8 operands, and the norms, the gate, Shiftmax, PV's rescale, the residual adds, SwiGLU's product, RoPE and "
          "the KV cache writes on the vector unit (lanes one-lane RTL units, rows dealt round-robin; hwsim.cost.vector). Parts run one "
          "after another. Prefill: S = T = prefill rows; decode: one row against prefill + 1 keys. The embedding gathers and the head "
          "(a linear, costed with the model's linears) are outside the block.")
    doc.table(["design", "phase", "lanes", "linears cycles", "attn matmul cycles", "vector cycles", "total cycles",
               "linears uJ", "attn matmul uJ", "vector uJ", "total uJ"],
              [[r["design"], r["phase"], r["vector_lanes"], r["linears_cycles"], r["attn_matmul_cycles"], r["vector_cycles"], r["total_cycles"],
                r["linears_uj"], r["attn_matmul_uj"], r["vector_uj"], r["total_uj"]] for r in bl["rows"]])
    doc.table(["design", "vector unit lanes", "units per lane", "transistors", "flip-flop bits", f"mm^2 ({data['node']})", "source"],
              [[d, a["lanes"], ", ".join(f"{u['unit']} L={u['L']}" for u in a["units"]), a["transistors"], a["ff_bits"], a["total_mm2"], a["source"]]
               for d, a in bl["vector_area"].items()])
