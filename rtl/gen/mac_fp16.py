"""FP16 MAC tensor-core generator (`mac-fp16`, hwsim/designs/_fp16.py): dequantize weights to fp16, multiply
fp16 x fp16 into exact fp32 products, add them in an fp32 tree per beat and into an fp32 accumulator.

Per column and feature one dequantizer f16_dq (shared by the M rows); per PE K exact multipliers, K - 1
tree adders and one accumulator adder (rtl/gen/fp16.py). The job's last beat writes the results into an
output shift register of D = M*N/lanes beats that drains while the next job computes. Arithmetic:
hwsim.golden.fp16_mac_tile; interface and timing: hwsim/designs/_fp16.py. act=bf16: the same structure with
bf16_dq and bf16_mul (rtl/gen/fp16.py `unit_functions`).
"""

from __future__ import annotations

from rtl.gen.common import V, clog2
from rtl.gen.fp16 import module_head, output_bank, functions, unit_functions


def tree(v: V, names: list[str], out: str) -> None:
    """Pairwise fp32 sum of `names` (neighbours first, level by level) into wire `out`."""
    level = 0
    while len(names) > 1:
        nxt = []
        for i in range(0, len(names), 2):
            w = f"{out}_l{level}_{i // 2}"
            v(f"wire [31:0] {w} = f32_add({names[i]}, {names[i + 1]});")
            nxt.append(w)
        names, level = nxt, level + 1
    v(f"wire [31:0] {out} = {names[0]};")


def generate(cfg) -> str:
    c = cfg
    M, N, K, B = c.M, c.N, c.K, c.bits
    CPG, D = c.chunks_per_group, c.drain_beats
    CW, OW = clog2(CPG + 1), clog2(D + 1)
    pre = unit_functions(c.act)["pre"]  # f16 / bf16: the activation format's units (rtl/gen/fp16.py)
    v = V()
    module_head(v, c, "FP16 MAC tensor core (fp16 weights by dequantization, fp16 x fp16, fp32 accumulation)", "fp16_mac_tile", functions(act=c.act))
    v("// ---- control: chunk within the group, job-first flag, output bank")
    v(f"reg [{CW - 1}:0] ci;")
    v(f"wire c_first = (ci == {CW}'d0);")
    v(f"wire c_last = (ci == {CW}'d{CPG - 1});")
    v("reg jfirst;")
    v("reg obusy;")
    v(f"reg [{OW - 1}:0] ocnt;")
    v("assign out_valid = obusy;")
    v(f"assign out_last = (ocnt == {OW}'d{D - 1});")
    v("wire out_fire = out_valid & out_ready;")
    v("assign in_ready = ~in_last | ~obusy | (out_fire & out_last);")
    v("wire in_fire = in_valid & in_ready;")
    v("wire load = in_fire & in_last;")
    v("always @(posedge clk) begin")
    v("    if (!rst_n) begin")
    v(f"        ci <= {CW}'d0; jfirst <= 1'b1; obusy <= 1'b0; ocnt <= {OW}'d0;")
    v("    end else begin")
    v("        if (in_fire) begin")
    v(f"            ci <= c_last ? {CW}'d0 : ci + {CW}'d1;")
    v("            jfirst <= in_last;")
    v("        end")
    v(f"        if (load) begin obusy <= 1'b1; ocnt <= {OW}'d0; end")
    v(f"        else if (out_fire) begin obusy <= ~out_last; ocnt <= out_last ? {OW}'d0 : ocnt + {OW}'d1; end")
    v("    end")
    v("end")
    v("// ---- columns: group fields (read on a group's first beat) and the dequantizers")
    for n in range(N):
        v(f"reg [{B - 1}:0] zr_{n};")
        v(f"reg [15:0] sr_{n};")
        v(f"wire [{B - 1}:0] z_{n} = c_first ? in_zero[{n * B + B - 1}:{n * B}] : zr_{n};")
        v(f"wire [15:0] s_{n} = c_first ? in_scale[{n * 16 + 15}:{n * 16}] : sr_{n};")
        v(f"always @(posedge clk) if (in_fire & c_first) begin zr_{n} <= z_{n}; sr_{n} <= s_{n}; end")
        for t in range(K):
            lo = (n * K + t) * B
            v(f"wire signed [{B}:0] wp_{n}_{t} = $signed({{1'b0, in_w[{lo + B - 1}:{lo}]}}) - $signed({{1'b0, z_{n}}});")
            v(f"wire [{B}:0] wa_{n}_{t} = wp_{n}_{t}[{B}] ? -wp_{n}_{t} : wp_{n}_{t};")
            wm = f"wa_{n}_{t}[3:0]" if B >= 4 else f"{{{4 - B}'d0, wa_{n}_{t}[{B - 1}:0]}}"
            v(f"wire [15:0] w_{n}_{t} = {pre}_dq(wp_{n}_{t}[{B}], {wm}, s_{n});")
    v("// ---- PEs: exact products, the beat's adder tree, the accumulator")
    for m in range(M):
        for n in range(N):
            p = f"{m}_{n}"
            for t in range(K):
                lo = (m * K + t) * 16
                v(f"wire [31:0] p_{p}_{t} = {pre}_mul(in_act[{lo + 15}:{lo}], w_{n}_{t});")
            tree(v, [f"p_{p}_{t}" for t in range(K)], f"t_{p}")
            v(f"reg [31:0] acc_{p};")
            v(f"wire [31:0] an_{p} = jfirst ? t_{p} : f32_add(acc_{p}, t_{p});")
            v(f"always @(posedge clk) if (in_fire) acc_{p} <= an_{p};")
    output_bank(v, c, "an", ", shifted out lanes per beat")
    return v.text()
