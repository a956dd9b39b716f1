"""MixPE-style array generator (`mixpe`): shift-and-add PEs with per-group integer accumulation.

Dataflow: output-stationary, broadcast (no systolic skew). An M x N grid of PEs; each accepted input
beat (one K-chunk, one beat per cycle) broadcasts a[m, k0..k0+K-1] along row m and the chunk's codes of
column n down column n. Column n first forms w' = q - z (B+1 bits, one subtractor per column and feature,
shared by the M rows). PE (m, n) multiplies each of its K activations by w' with shift-and-add (the bits
of w' select shifted copies of a; the sign bit's copy is subtracted: no multiplier) and adds the K
products to its group accumulator (ACCW bits, exact). When a group's last chunk is accepted the M*N
accumulators move to the epilogue's shadow bank in the same cycle, which dequantizes each group sum
once (P = acc * mant, dyadic shift, add into Y): the MixPE "dequantize after the per-group mpGEMM" order.
A16 uses the same PEs on AB-bit BFP mantissas; the block exponent enters the epilogue shift.
E2M1 codes (hwsim/golden.py 1b) need no column subtract: each PE adds at most two shifted copies of a chosen by
the code's exponent and mantissa bits and negates the sum by its sign bit (`e2m1_product`).
"""

from __future__ import annotations

from hwsim.config import ArrayConfig
from hwsim.designs.mixpe import product_bits
from rtl.gen.common import V, bit_parallel_control, epilogue, header, input_fields, sext, shadow_decls, shadow_update


def _shl(x: str, b: int, w: int) -> str:
    return f"{{{x}[{w - 1 - b}:0], {b}'d0}}" if b else x


def e2m1_product(q: str, ax: str, w: int, out: str) -> str:
    """`out` = a * w' for the E2M1 code `q` (hwsim/golden.py 1b): the copies a << e (e > 0) and a << max(e-1, 0)
    (mantissa 1), chosen by the exponent bits q[2:1], added, and negated for the sign bit q[3]."""
    e, m, s = f"{q}[2:1]", f"{q}[0]", f"{q}[3]"
    t1 = f"({e} == 2'd3 ? {_shl(ax, 3, w)} : {e} == 2'd2 ? {_shl(ax, 2, w)} : {e} == 2'd1 ? {_shl(ax, 1, w)} : {w}'d0)"
    t2 = f"(~{m} ? {w}'d0 : {e} == 2'd3 ? {_shl(ax, 2, w)} : {e} == 2'd2 ? {_shl(ax, 1, w)} : {ax})"
    return f"{out} = {t1} + {t2}; if ({s}) {out} = -{out};"


def generate(cfg: ArrayConfig) -> str:
    c = cfg
    M, N, K, B, AW, ACCW = c.M, c.N, c.K, c.bits, c.act_bits, c.acc_bits
    PRW = product_bits(c)
    v = V()
    header(c, v, "MixPE-style array (shift-and-add PEs, per-group integer accumulation, one dequantization per group)")
    input_fields(c, v)
    shadow_decls(c, v, "int")
    bit_parallel_control(c, v)
    if not c.e2m1:
        v("// ---- column weights w' = q - z")
        for n in range(N):
            for t in range(K):
                v(f"wire signed [{B}:0] wp_{n}_{t} = $signed({{1'b0, q_{n}_{t}}}) - $signed({{1'b0, ez_{n}}});")
    v("// ---- row activations, sign-extended once per row and feature")
    for m in range(M):
        for t in range(K):
            v(f"wire [{PRW - 1}:0] ax_{m}_{t} = {sext(f'a_{m}_{t}', AW, PRW)};")
    v("// ---- PEs: shift-and-add products, group accumulators (procedural: evaluated once per clock)")
    for m in range(M):
        for n in range(N):
            v(f"reg signed [{ACCW - 1}:0] acc_{m}_{n};")
    v("always @(posedge clk) begin : pe_array")
    v("    " + " ".join(f"reg [{PRW - 1}:0] pd_{t};" for t in range(K)))
    v(f"    reg signed [{ACCW - 1}:0] an;")
    for m in range(M):
        for n in range(N):
            p = f"{m}_{n}"
            for t in range(K):
                if c.e2m1:
                    v(f"    {e2m1_product(f'q_{n}_{t}', f'ax_{m}_{t}', PRW, f'pd_{t}')}")
                    continue
                terms = []
                for b in range(B + 1):
                    sh = f"{{ax_{m}_{t}[{PRW - 1 - b}:0], {b}'d0}}" if b else f"ax_{m}_{t}"
                    terms.append(f"(wp_{n}_{t}[{b}] ? {sh} : {PRW}'d0)")
                v(f"    pd_{t} = {' + '.join(terms[:-1])} - {terms[-1]};")
            gs = " + ".join(sext(f"pd_{t}", PRW, ACCW) for t in range(K))
            v(f"    an = (c_first ? {ACCW}'d0 : acc_{p}) + {gs};")
            v(f"    if (in_fire) acc_{p} <= an;")
            v(f"    {shadow_update(c, m, n, 'an')}")
    v("end")
    v()
    epilogue(
        c,
        v,
        "int",
        dict(
            mant=lambda n: f"em_{n}",
            d=lambda n: f"ed_{n}",
            da=lambda m: f"eda_{m}",
            mm=lambda n: f"emm_{n}",
            dm=lambda n: f"edm_{n}",
            S=lambda m: f"S_nx_{m}",
            first="jfirst",
            last="in_last",
        ),
    )
    v("endmodule")
    return v.text()
