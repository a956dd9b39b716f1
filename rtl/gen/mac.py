"""Conventional baseline array generator (`mac`): dequantize weights, multiply with ordinary multipliers.

Dataflow: the same output-stationary broadcast grid as `mixpe` (one K-chunk per cycle, M x N PEs).
Each column dequantizes its K weights to integers wd = (q - z) * mant (one multiplier per column and
feature, shared by the rows: the "dequantize then GEMM" order of conventional kernels), and every PE
multiplies a by wd with a full AW x (B+1+MW) multiplier and accumulates P = sum a * wd = acc * mant
(PW bits). The epilogue then only shifts and adds (no per-group multiply). Bit-exact with every other
design; its area is the point of comparison.
"""

from __future__ import annotations

from hwsim.config import ArrayConfig
from rtl.gen.common import V, bit_parallel_control, e2m1_decode, epilogue, header, input_fields, sext, shadow_decls, shadow_update


def generate(cfg: ArrayConfig) -> str:
    c = cfg
    M, N, K, B, AW, MW, PW = c.M, c.N, c.K, c.bits, c.act_bits, c.mant_bits, c.prod_bits
    WDW = B + MW + 1
    PRW = AW + WDW
    v = V()
    header(c, v, "MAC baseline array (dequantize weights, ordinary multipliers)")
    input_fields(c, v)
    shadow_decls(c, v, "prod")
    bit_parallel_control(c, v)
    v("// ---- column dequantization: wd = w' * mant (w' = q - z, or the E2M1 decoding)")
    for n in range(N):
        v(f"wire signed [{MW}:0] ms_{n} = {{1'b0, em_{n}}};")
        for t in range(K):
            if c.e2m1:
                e2m1_decode(v, f"q_{n}_{t}", f"wp_{n}_{t}")
            else:
                v(f"wire signed [{B}:0] wp_{n}_{t} = $signed({{1'b0, q_{n}_{t}}}) - $signed({{1'b0, ez_{n}}});")
            v(f"wire signed [{WDW - 1}:0] wd_{n}_{t} = wp_{n}_{t} * ms_{n};")
    v("// ---- PEs: multiply-accumulate (procedural: evaluated once per clock)")
    for m in range(M):
        for n in range(N):
            v(f"reg signed [{PW - 1}:0] acc_{m}_{n};")
    v("always @(posedge clk) begin : pe_array")
    v("    " + " ".join(f"reg signed [{PRW - 1}:0] pd_{t};" for t in range(K)))
    v(f"    reg signed [{PW - 1}:0] an;")
    for m in range(M):
        for n in range(N):
            p = f"{m}_{n}"
            for t in range(K):
                v(f"    pd_{t} = a_{m}_{t} * wd_{n}_{t};")
            gs = " + ".join(sext(f"pd_{t}", PRW, PW) for t in range(K))
            v(f"    an = (c_first ? {PW}'d0 : acc_{p}) + {gs};")
            v(f"    if (in_fire) acc_{p} <= an;")
            v(f"    {shadow_update(c, m, n, 'an')}")
    v("end")
    v()
    epilogue(
        c,
        v,
        "prod",
        dict(
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
