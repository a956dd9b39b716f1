"""MixPE fp16-mode generator (`mixpe-fp16`, hwsim/designs/_fp16.py): no weight dequantization and no
multiplier. Per PE and feature the activation's 11-bit significand is shifted by each set bit of
|w'| = |q - z| and the copies added (f16_shadd: an exact fp32 product, exponent passed through); the beat's
fp32 tree and an fp32 group accumulator follow; at a group's last beat each PE's epilogue forms
P = fp32(g * s) and Y = Y + P; the job's last beat writes Y into the output bank. Control and timing as
mac-fp16. Arithmetic: hwsim.golden.fp16_mixpe_tile. act=bf16: bf16_shadd and bf16_to_f32 (rtl/gen/fp16.py).
"""

from __future__ import annotations

from rtl.gen.common import V, clog2
from rtl.gen.fp16 import module_head, output_bank, F32_MUL, functions, unit_functions
from rtl.gen.mac_fp16 import tree

def generate(cfg) -> str:
    c = cfg
    M, N, K, B = c.M, c.N, c.K, c.bits
    CPG, D = c.chunks_per_group, c.drain_beats
    CW, OW = clog2(CPG + 1), clog2(D + 1)
    u = unit_functions(c.act)  # the activation format's units (rtl/gen/fp16.py)
    pre = u["pre"]
    v = V()
    module_head(v, c, "MixPE fp16 mode (shift-and-add significands, fp32 accumulation, per-group scale)", "fp16_mixpe_tile",
                functions(F32_MUL, u["to_f32"], u["shadd"], act=c.act))
    v("// ---- control: chunk within the group, first group of the job, output bank")
    v(f"reg [{CW - 1}:0] ci;")
    v(f"wire c_first = (ci == {CW}'d0);")
    v(f"wire c_last = (ci == {CW}'d{CPG - 1});")
    v("reg jg;  // the current group is its job's first")
    v("reg obusy;")
    v(f"reg [{OW - 1}:0] ocnt;")
    v("assign out_valid = obusy;")
    v(f"assign out_last = (ocnt == {OW}'d{D - 1});")
    v("wire out_fire = out_valid & out_ready;")
    v("assign in_ready = ~in_last | ~obusy | (out_fire & out_last);")
    v("wire in_fire = in_valid & in_ready;")
    v("wire load = in_fire & in_last;")
    v("wire gend = in_fire & c_last;")
    v("always @(posedge clk) begin")
    v("    if (!rst_n) begin")
    v(f"        ci <= {CW}'d0; jg <= 1'b1; obusy <= 1'b0; ocnt <= {OW}'d0;")
    v("    end else begin")
    v("        if (in_fire) begin")
    v(f"            ci <= c_last ? {CW}'d0 : ci + {CW}'d1;")
    v("            if (c_last) jg <= in_last;")
    v("        end")
    v(f"        if (load) begin obusy <= 1'b1; ocnt <= {OW}'d0; end")
    v(f"        else if (out_fire) begin obusy <= ~out_last; ocnt <= out_last ? {OW}'d0 : ocnt + {OW}'d1; end")
    v("    end")
    v("end")
    v("// ---- columns: group fields (read on a group's first beat), integer weights")
    for n in range(N):
        v(f"reg [{B - 1}:0] zr_{n};")
        v(f"reg [15:0] sr_{n};")
        v(f"wire [{B - 1}:0] z_{n} = c_first ? in_zero[{n * B + B - 1}:{n * B}] : zr_{n};")
        v(f"wire [15:0] s_{n} = c_first ? in_scale[{n * 16 + 15}:{n * 16}] : sr_{n};")
        v(f"always @(posedge clk) if (in_fire & c_first) begin zr_{n} <= z_{n}; sr_{n} <= s_{n}; end")
        v(f"wire [31:0] sf_{n} = {pre}_to_f32(s_{n});")
        for t in range(K):
            lo = (n * K + t) * B
            v(f"wire signed [4:0] wp_{n}_{t} = $signed({{{5 - B}'d0, in_w[{lo + B - 1}:{lo}]}}) - $signed({{{5 - B}'d0, z_{n}}});")
    v("// ---- PEs: shift-and-add products, the beat's tree, group accumulator, epilogue")
    for m in range(M):
        for n in range(N):
            p = f"{m}_{n}"
            for t in range(K):
                lo = (m * K + t) * 16
                v(f"wire [31:0] p_{p}_{t} = {pre}_shadd(in_act[{lo + 15}:{lo}], wp_{n}_{t});")
            tree(v, [f"p_{p}_{t}" for t in range(K)], f"t_{p}")
            v(f"reg [31:0] g_{p};")
            v(f"wire [31:0] gn_{p} = c_first ? t_{p} : f32_add(g_{p}, t_{p});")
            v(f"always @(posedge clk) if (in_fire) g_{p} <= gn_{p};")
            v(f"wire [31:0] P_{p} = f32_mul(gn_{p}, sf_{n});")
            v(f"reg [31:0] Y_{p};")
            v(f"wire [31:0] Yn_{p} = jg ? P_{p} : f32_add(Y_{p}, P_{p});")
            v(f"always @(posedge clk) if (gend) Y_{p} <= Yn_{p};")
    output_bank(v, c, "Yn")
    return v.text()
