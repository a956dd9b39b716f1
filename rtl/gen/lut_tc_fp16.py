"""LUT Tensor Core generator with FP16 activations (`lut-tc-fp16`, hwsim/designs/_fp16.py).

An accepted beat is registered: per row the 2^(K-1) fp16 table entries (prefix sums of fp16 adders,
shared between entries), the columns' codes and, on a group's first beat, z and s. In the next B cycles
plane b = 0 .. B-1 is read: per PE one table lookup with the sign trick, the entry widened to fp32 and
multiplied by 2^b (an exponent increment), one fp32 add into the group accumulator. Per row the
all-ones entry is summed into S. At a group's last plane each PE's epilogue forms
P = fp32(fp32(g + fp32(c S)) / 2 * s) and Y = Y + P; the job's last plane writes Y into the output bank
(D = M*N/lanes beats, drained while the next job computes). Arithmetic: hwsim.golden.fp16_lut_tile.
act=bf16: bf16_add tables, bf16_to_f32, and the bf16 forms of f32_pow2 and f32_half (rtl/gen/fp16.py).
"""

from __future__ import annotations

from rtl.gen.common import V, clog2
from rtl.gen.fp16 import module_head, output_bank, F32_MUL, functions, half_function, pow2_function, unit_functions

I2F_C = """\
// the odd integer c = 2^B - 1 - 2 z (|c| <= 15) as fp32, exact.
function [31:0] i2f_c;
    input signed [5:0] c;
    reg [4:0] a;
    reg [1:0] l;
    reg [22:0] f;
    integer i;
    begin
        a = c[5] ? -c : c;
        l = 0;
        for (i = 0; i < 4; i = i + 1)
            if (a[i]) l = i;
        f = {a[3:0], 19'd0} << (4 - l);
        i2f_c = {c[5], 8'd127 + l, f};
    end
endfunction
"""


def helpers(act: str) -> str:
    """2^b, A / 2 (format-dependent: rtl/gen/fp16.py) and the exact integer c as fp32."""
    return "\n".join([pow2_function(act), half_function(act), I2F_C])


HELPERS = helpers("fp16")


def generate(cfg) -> str:
    c = cfg
    M, N, K, B = c.M, c.N, c.K, c.bits
    E, CPG, D = 1 << (K - 1), c.chunks_per_group, c.drain_beats
    CW, OW, PW = clog2(CPG + 1), clog2(D + 1), 2
    u = unit_functions(c.act)  # the activation format's units (rtl/gen/fp16.py)
    pre = u["pre"]
    v = V()
    module_head(v, c, "LUT tensor core, FP16 activations (fp16 tables, bit-serial planes, fp32 accumulation)", "fp16_lut_tile",
                functions(u["add"], F32_MUL, u["to_f32"], helpers(c.act), act=c.act))
    v("// ---- control: the registered beat, its plane, the output bank")
    v(f"reg [{CW - 1}:0] ci;")
    v(f"wire c_first = (ci == {CW}'d0);")
    v(f"wire c_last = (ci == {CW}'d{CPG - 1});")
    v("reg jf;  // the next group is its job's first")
    v("reg have, lfirst, llast, ljlast, ljg;  // a beat is registered; its chunk's place; job last; first group of job")
    v(f"reg [{PW - 1}:0] pb;")
    v(f"wire plast = (pb == {PW}'d{B - 1});")
    v("reg obusy;")
    v(f"reg [{OW - 1}:0] ocnt;")
    v("assign out_valid = obusy;")
    v(f"assign out_last = (ocnt == {OW}'d{D - 1});")
    v("wire out_fire = out_valid & out_ready;")
    v("wire jend = have & plast & ljlast;")
    v("wire adv = have & (~jend | ~obusy | (out_fire & out_last));")
    v("assign in_ready = ~have | (adv & plast);")
    v("wire in_fire = in_valid & in_ready;")
    v("wire p0 = (pb == 0);")
    v("wire gend = adv & plast & llast;  // the group's epilogue runs this cycle")
    v("wire load = adv & jend;")
    v("always @(posedge clk) begin")
    v("    if (!rst_n) begin")
    v(f"        ci <= {CW}'d0; jf <= 1'b1; have <= 1'b0; pb <= {PW}'d0; obusy <= 1'b0; ocnt <= {OW}'d0;")
    v("    end else begin")
    v(f"        if (adv) pb <= plast ? {PW}'d0 : pb + {PW}'d1;")
    v("        if (in_fire) have <= 1'b1; else if (adv & plast) have <= 1'b0;")
    v("        if (in_fire) begin")
    v(f"            ci <= c_last ? {CW}'d0 : ci + {CW}'d1;")
    v("            jf <= in_last ? 1'b1 : (c_last ? 1'b0 : jf);")
    v("            lfirst <= c_first; llast <= c_last; ljlast <= in_last; ljg <= jf;")
    v("        end")
    v(f"        if (load) begin obusy <= 1'b1; ocnt <= {OW}'d0; end")
    v(f"        else if (out_fire) begin obusy <= ~out_last; ocnt <= out_last ? {OW}'d0 : ocnt + {OW}'d1; end")
    v("    end")
    v("end")
    v("// ---- table units: per row the symmetric fp16 table of the beat (prefix sums), registered; row sum S")
    for m in range(M):
        a = [f"x_{m}_{t}" for t in range(K)]
        for t in range(K):
            v(f"wire [15:0] x_{m}_{t} = in_act[{(m * K + t) * 16 + 15}:{(m * K + t) * 16}];")
        level = [a[0]]
        for i in range(1, K):
            nxt = []
            for half, op in ((0, "neg"), (1, "pos")):
                for e, prev in enumerate(level):
                    w = f"tp_{m}_{i}_{half * len(level) + e}"
                    arg = a[i] if op == "pos" else f"{{~{a[i]}[15], {a[i]}[14:0]}}"
                    v(f"wire [15:0] {w} = {pre}_add({prev}, {arg});")
                    nxt.append(w)
            level = nxt
        cat = ", ".join(reversed(level))
        v(f"reg [{E * 16 - 1}:0] tbl_{m};")
        v(f"always @(posedge clk) if (in_fire) tbl_{m} <= {{{cat}}};")
        v(f"wire [31:0] top_{m} = {pre}_to_f32(tbl_{m}[{E * 16 - 1}:{(E - 1) * 16}]);")
        v(f"reg [31:0] S_{m};")
        v(f"wire [31:0] Sn_{m} = lfirst ? top_{m} : f32_add(S_{m}, top_{m});")
        v(f"always @(posedge clk) if (adv & p0) S_{m} <= Sn_{m};")
        v(f"wire [31:0] Se_{m} = p0 ? Sn_{m} : S_{m};")
    v("// ---- columns: registered codes, group fields, the plane's slice")
    for n in range(N):
        v(f"reg [{K * B - 1}:0] cw_{n};")
        v(f"always @(posedge clk) if (in_fire) cw_{n} <= in_w[{(n + 1) * K * B - 1}:{n * K * B}];")
        v(f"reg [{B - 1}:0] z_{n};")
        v(f"reg [15:0] s_{n};")
        v(f"always @(posedge clk) if (in_fire & c_first) begin z_{n} <= in_zero[{n * B + B - 1}:{n * B}]; s_{n} <= in_scale[{n * 16 + 15}:{n * 16}]; end")
        bits = [f"cw_{n}[{t * B} + pb]" for t in range(K)]
        v(f"wire w0_{n} = {bits[0]};")
        if K > 1:
            v(f"wire [{K - 2}:0] ix_{n} = {{{', '.join(reversed(bits[1:]))}}};")
            v(f"wire [{K - 2}:0] ef_{n} = w0_{n} ? ix_{n} : ~ix_{n};")
        v(f"wire [31:0] cf_{n} = i2f_c(6'd{(1 << B) - 1} - {{{5 - B}'d0, z_{n}, 1'b0}});")
        v(f"wire [31:0] sf_{n} = {pre}_to_f32(s_{n});")
    v("// ---- PEs: lookup, 2^b, group accumulator; epilogue at the group's last plane")
    for m in range(M):
        for n in range(N):
            p = f"{m}_{n}"
            ent = f"tbl_{m}[ef_{n} * 16 +: 16]" if K > 1 else f"tbl_{m}[15:0]"
            v(f"wire [15:0] e_{p} = {ent};")
            v(f"wire [31:0] v_{p} = f32_pow2({pre}_to_f32(w0_{n} ? e_{p} : {{~e_{p}[15], e_{p}[14:0]}}), pb);")
            v(f"reg [31:0] g_{p};")
            v(f"wire [31:0] gn_{p} = (lfirst & p0) ? v_{p} : f32_add(g_{p}, v_{p});")
            v(f"always @(posedge clk) if (adv) g_{p} <= gn_{p};")
            v(f"wire [31:0] P_{p} = f32_mul(f32_half(f32_add(gn_{p}, f32_mul(cf_{n}, Se_{m}))), sf_{n});")
            v(f"reg [31:0] Y_{p};")
            v(f"wire [31:0] Yn_{p} = ljg ? P_{p} : f32_add(Y_{p}, P_{p});")
            v(f"always @(posedge clk) if (gend) Y_{p} <= Yn_{p};")
    output_bank(v, c, "Yn")
    return v.text()
