"""LUT Tensor Core-style array generator (`lut-tc`).

Datapath (one input beat = one K-chunk; default elongated tile M=2, N=64, K=4 as in the paper):

1. Table precompute unit (one per row, on the accepted beat): the 2^(K-1) symmetric entries
   T8[e] = a_0 + sum_t (e_{t-1} ? a_t : -a_t) (TW bits each) are registered together with the chunk's
   weight codes, re-arranged plane-major (MSB plane first).
2. Bit-serial planes: for B cycles, every (m, n) PE reads its row's table with column n's K-bit slice of
   the current plane (entry index = bits [K-1:1], or their complement with the result negated when bit 0
   is 0: table symmetrization) and forms part = 2*part + lookup (Horner, MSB first: a fixed shift by one,
   no barrel shifter). On the last plane, acc2 += part. The weight register shifts by K bits a cycle.
   A beat is accepted every B cycles (in_ready during the last plane, or when idle).
3. S (the row's activation sum over the group) is the table's all-ones entry T8[2^(K-1)-1], accumulated
   per row. At the group's end acc2 (per PE), S (per row) and the group's zero points go to the
   epilogue, whose lanes compute acc = (acc2 + (2^B - 1 - 2z) * S) >>> 1 before the dyadic
   dequantization (hwsim/golden.py derives the correction).
Variants (ArrayConfig fields, hwsim/golden.py 3): table "stream" replaces step 1's adders by the in_tbl port
(the program's precomputed tables, registered as they are); sym False builds or takes all 2^K entries
T16[i] = sum_t (i_t ? a_t : -a_t) and reads T16[w] directly (a 2^K:1 mux, no complement, no negation).
Ternary weights run on the B = 2 datapath with codes t+1 and zero 1. E2M1 codes (hwsim/golden.py 1b) are decoded
as the beat is registered into the five planes of w' + 16 (B = 5 plane cycles a beat, acc2 ACC2W bits wide), and
the epilogue's correction is the constant c = -1: acc = (acc2 - S) >>> 1.
"""

from __future__ import annotations

from hwsim.config import ArrayConfig
from rtl.gen.common import V, clog2, e2m1_decode, epilogue, group_params, header, input_fields, sext, shadow_decls, shadow_update


def generate(cfg: ArrayConfig) -> str:
    c = cfg
    M, N, K, B, AW = c.M, c.N, c.K, c.planes, c.act_bits
    TW, ACCW, SUMW = c.table_bits, c.acc2_bits, c.sum_bits
    E = c.table_entries
    sym = c.sym
    PTW = TW + B - 1  # |part| <= (2^B - 1) * K * 2^(AW-1)
    CPG = c.chunks_per_group
    CW = clog2(CPG + 1)
    PB = clog2(B + 1)
    v = V()
    tables = ("streamed tables" if c.streams_tables else "table precompute") + ("" if sym else f", {E}-entry tables")
    header(c, v, f"LUT Tensor Core-style array ({tables}, bit-serial planes, shift-accumulate)")
    input_fields(c, v)
    shadow_decls(c, v, "lut")
    v("wire in_fire = in_valid & in_ready;")
    v(f"reg [{CW - 1}:0] ci;  // chunk index within the group (input side)")
    v("always @(posedge clk) begin")
    v(f"    if (!rst_n) ci <= {CW}'d0;")
    v(f"    else if (in_fire) ci <= (ci == {CW}'d{CPG - 1}) ? {CW}'d0 : ci + {CW}'d1;")
    v("end")
    group_params(c, v, f"in_fire & (ci == {CW}'d0)")

    if c.e2m1:
        v("// ---- E2M1 codes -> the five offset-binary planes of w' + 16 (w' two's complement, top bit inverted)")
        for n in range(N):
            for t in range(K):
                e2m1_decode(v, f"q_{n}_{t}", f"wp_{n}_{t}")
                v(f"wire [4:0] u_{n}_{t} = {{~wp_{n}_{t}[4], wp_{n}_{t}[3:0]}};")
    plane_src = (lambda n, t: f"u_{n}_{t}") if c.e2m1 else (lambda n, t: f"q_{n}_{t}")
    if c.streams_tables:  # registered as they come: row m's entries at in_tbl[m*E*TW +: E*TW]
        table_in = lambda m: f"in_tbl[{(m + 1) * E * TW - 1}:{m * E * TW}]"  # noqa: E731
    else:
        v("// ---- table precompute (combinational on the input beat)")
        for m in range(M):
            for e in range(E):
                v(f"wire [{TW - 1}:0] tn_{m}_{e} = {table_entry(m, e, K, AW, TW, sym)};")
        v()
        table_in = lambda m: f"{{{', '.join(f'tn_{m}_{e}' for e in reversed(range(E)))}}}"  # noqa: E731
    v("// ---- stage registers: tables, plane-major weights, chunk flags")
    v(f"reg busy; reg [{PB - 1}:0] pl; reg st_first, st_last, st_glast;")
    for m in range(M):
        v(f"reg [{E * TW - 1}:0] tbl_{m};")
    for n in range(N):
        v(f"reg [{B * K - 1}:0] wpl_{n};  // plane p (MSB first) at bits [(B-1-p)*K +: K] after p shifts: top K bits")
    v(f"wire last_plane = (pl == {PB}'d{B - 1});")
    v("assign snap_req = busy & last_plane & st_last;")
    v("wire adv = busy & ~(last_plane & st_last & ~snap_ok);")
    v("wire fin = adv & last_plane;")
    v("assign in_ready = ~busy | fin;")
    v("reg jfirst;  // the next group to finish is the first of its job")
    v()
    # plane-major rearrangement: bits of plane b for features t=0..K-1 -> positions b*K + t
    v("always @(posedge clk) begin")
    v("    if (!rst_n) begin")
    v(f"        busy <= 1'b0; pl <= {PB}'d0; jfirst <= 1'b1;")
    v("    end else begin")
    v("        if (in_fire) begin")
    v(f"            busy <= 1'b1; pl <= {PB}'d0;")
    v("        end else if (fin) begin")
    v("            busy <= 1'b0;")
    v("        end else if (adv) begin")
    v(f"            pl <= pl + {PB}'d1;")
    v("        end")
    v("        if (snap_fire) jfirst <= st_glast;")
    v("    end")
    v("end")
    v("always @(posedge clk) begin")
    v("    if (in_fire) begin")
    v(f"        st_first <= (ci == {CW}'d0); st_last <= (ci == {CW}'d{CPG - 1}); st_glast <= in_last;")
    for m in range(M):
        v(f"        tbl_{m} <= {table_in(m)};")
    for n in range(N):
        bits = []
        for b in range(B):
            for t in range(K):
                bits.append(f"{plane_src(n, t)}[{b}]")
        v(f"        wpl_{n} <= {{{', '.join(reversed(bits))}}};")
    v("    end else if (adv) begin")
    for n in range(N):
        if B > 1:
            v(f"        wpl_{n} <= {{wpl_{n}[{(B - 1) * K - 1}:0], {K}'d0}};")
    v("    end")
    v("end")
    v()
    v("// ---- lookups, Horner shift-accumulate, group accumulators")
    for n in range(N):
        top = (B - 1) * K
        v(f"wire [{K - 1}:0] cw_{n} = wpl_{n}[{top + K - 1}:{top}];")
        if sym:  # bit 0 clear: the complement's entry, negated below
            v(f"wire [{K - 2}:0] ix_{n} = cw_{n}[0] ? cw_{n}[{K - 1}:1] : ~cw_{n}[{K - 1}:1];")
    for m in range(M):
        v(f"reg signed [{SUMW - 1}:0] S_{m};")
        v(f"wire signed [{TW - 1}:0] tsum_{m} = tbl_{m}[{E * TW - 1}:{(E - 1) * TW}];")
        v(f"wire signed [{SUMW - 1}:0] S_nx_{m} = (st_first ? {SUMW}'d0 : S_{m}) + {sext(f'tsum_{m}', TW, SUMW)};")
    for m in range(M):
        for n in range(N):
            v(f"reg signed [{ACCW - 1}:0] acc2_{m}_{n};")
            if B > 1:
                v(f"reg signed [{PTW - 2}:0] part_{m}_{n};  // before the last plane |part| < 2^(B-1) * K * 2^(AW-1)")
    v("always @(posedge clk) begin : lut_array  // procedural: evaluated once per clock")
    v(f"    reg signed [{TW - 1}:0] {'tv, ' if sym else ''}lk; reg signed [{PTW - 1}:0] pn; reg signed [{ACCW - 1}:0] an;")
    for m in range(M):
        for n in range(N):
            p = f"{m}_{n}"
            if sym:
                v(f"    tv = tbl_{m}[ix_{n} * {TW} +: {TW}];")
                v(f"    lk = cw_{n}[0] ? tv : -tv;")
            else:
                v(f"    lk = tbl_{m}[cw_{n} * {TW} +: {TW}];")
            if B > 1:
                v(f"    pn = (pl == {PB}'d0 ? {PTW}'d0 : {{part_{p}, 1'b0}}) + {sext('lk', TW, PTW)};")
            else:
                v(f"    pn = {sext('lk', TW, PTW)};")
            v(f"    an = (st_first ? {ACCW}'d0 : acc2_{p}) + {sext('pn', PTW, ACCW)};")
            if B > 1:
                v(f"    if (adv) part_{p} <= pn[{PTW - 2}:0];")
            v(f"    if (adv & last_plane) acc2_{p} <= an;")
            v(f"    {shadow_update(c, m, n, 'an')}")
    v("    if (adv & last_plane) begin")
    for m in range(M):
        v(f"        S_{m} <= S_nx_{m};")
    v("    end")
    v("end")
    v()
    epilogue(
        c,
        v,
        "lut",
        dict(
            mant=lambda n: f"gm_{n}",
            d=lambda n: f"gd_{n}",
            da=lambda m: f"gda_{m}",
            z=lambda n: f"gz_{n}",  # unused for E2M1 (c = -1)
            S=lambda m: f"S_nx_{m}",
            mm=lambda n: f"gmm_{n}",
            dm=lambda n: f"gdm_{n}",
            first="jfirst",
            last="st_glast",
        ),
    )
    v("endmodule")
    return v.text()


def table_entry(m: int, e: int, K: int, AW: int, TW: int, sym: bool) -> str:
    """Entry e of row m's table as a K-term sum: symmetric T8[e] (a_0 always +, feature t by bit t-1 of e)
    or the full T16[e] (feature t by bit t of e)."""
    plus = [True] + [bool((e >> (t - 1)) & 1) for t in range(1, K)] if sym else [bool((e >> t) & 1) for t in range(K)]
    terms = [("" if plus[0] else "-") + sext(f"a_{m}_0", AW, TW)]
    terms += [f"{'+' if plus[t] else '-'} {sext(f'a_{m}_{t}', AW, TW)}" for t in range(1, K)]
    return " ".join(terms)
