"""IEEE floating-point units of the FP16-activation arrays, as Verilog-2005 functions (synthesizable: constant
loop bounds). Each is exact to hwsim.golden.fp16_mac_tile's steps, round to nearest even throughout:

    f16_dq(ws, wm, s)    fp16((-1)^ws wm * s): the dequantizer (wm = |q - z| <= 15, s an fp16 scale)
    f16_mul(x, y)        the fp32 product of two fp16 values, exact (no rounding step)
    f32_add(a, b)        fp32 addition: subnormal operands and results, +-0, inf, NaN as IEEE 754
    f16_add(a, b)        the same in fp16 (the LUT tables' adders; `add_function` makes both)
    f32_mul(a, b)        fp32 multiplication, rounded once, subnormal results
    f16_to_f32(x)        exact widening
    f16_shadd(x, w)      x * w for a small integer w (|w| <= 15), exact in fp32, by shift-and-add (MixPE)

NaN results are the canonical quiet NaNs 16'h7e00 / 32'h7fc00000.

The 16-bit units are generated for an exponent / fraction width (`unit_functions(act)`): fp16 (5, 10) gives the
functions above, bf16 (8, 7) the same structure under the names bf16_dq, bf16_mul, bf16_add, bf16_to_f32,
bf16_shadd, where bf16's exponent range (fp32's) adds what fp16 never needs: bf16_mul and bf16_shadd round
products below 2^-126 to fp32 subnormals and give inf from 2^128 (hwsim.golden.fp16_mac_tile's bf16 note),
bf16_dq normalizes its product instead of a fixed-point register (265 bits for bf16), bf16_to_f32 is a
concatenation, and lut-tc's 2^b and A/2 steps (`pow2_function`, `half_function`) handle fp32 subnormals.
bf16 NaNs are 16'h7fc0.
"""

from hwsim.designs._fp16 import ACT

F16_DQ = """\
// fp16((-1)^ws * wm * s), one rounding: wm * significand(s) is exact (15 bits); as an integer U of units of
// 2^-24 it is normalized to bit 44, then rounded to 11 significant bits (subnormal U < 2^10 is exact).
function [15:0] f16_dq;
    input ws;
    input [3:0] wm;
    input [15:0] s;
    reg sg;
    reg [4:0] es;
    reg [14:0] p;
    reg [44:0] u;
    reg [5:0] l;
    reg [5:0] ef;
    reg [14:0] mag;
    integer i;
    begin
        sg = ws ^ s[15];
        es = s[14:10];
        if (es == 5'h1f && (s[9:0] != 0 || wm == 0))
            f16_dq = 16'h7e00;
        else if (es == 5'h1f)
            f16_dq = {sg, 5'h1f, 10'd0};
        else if (wm == 0 || s[14:0] == 0)
            f16_dq = {sg, 15'd0};
        else begin
            p = wm * {es != 0, s[9:0]};
            u = {30'd0, p} << ((es == 0) ? 0 : es - 1);
            l = 0;
            for (i = 0; i < 45; i = i + 1)
                if (u[i]) l = i;
            if (l < 10)
                f16_dq = {sg, 5'd0, u[9:0]};
            else begin
                ef = l - 9;
                u = u << (44 - l);
                mag = {ef[4:0], u[43:34]} + (u[33] & ((|u[32:0]) | u[34]));
                f16_dq = (ef >= 31) ? {sg, 5'h1f, 10'd0} : {sg, mag};
            end
        end
    end
endfunction
"""

F16_MUL = """\
// x * y for fp16 x, y as an exact fp32 value: 11 x 11 significand bits, normalized, never rounded.
function [31:0] f16_mul;
    input [15:0] x;
    input [15:0] y;
    reg sg;
    reg [4:0] ex, ey;
    reg [21:0] m;
    reg [4:0] l;
    reg [8:0] e;
    integer i;
    begin
        sg = x[15] ^ y[15];
        ex = x[14:10];
        ey = y[14:10];
        if ((ex == 5'h1f && x[9:0] != 0) || (ey == 5'h1f && y[9:0] != 0) || (ex == 5'h1f && y[14:0] == 0) || (ey == 5'h1f && x[14:0] == 0))
            f16_mul = 32'h7fc00000;
        else if (ex == 5'h1f || ey == 5'h1f)
            f16_mul = {sg, 8'hff, 23'd0};
        else if (x[14:0] == 0 || y[14:0] == 0)
            f16_mul = {sg, 31'd0};
        else begin
            m = {ex != 0, x[9:0]} * {ey != 0, y[9:0]};
            l = 0;
            for (i = 0; i < 22; i = i + 1)
                if (m[i]) l = i;
            e = l + ((ex == 0) ? 5'd1 : ex) + ((ey == 0) ? 5'd1 : ey) + 77;
            m = m << (21 - l);
            f16_mul = {sg, e[7:0], m[20:0], 2'b00};
        end
    end
endfunction
"""

def add_function(name: str, EW: int, FW: int) -> str:
    """a + b in the IEEE format of EW exponent and FW fraction bits, round to nearest even: order by
    magnitude, align with guard, round and sticky bits, add or subtract, normalize (left at most to the
    subnormal range), round once."""
    W, EM, SW = 1 + EW + FW, (1 << EW) - 1, FW + 4  # SW: significand with hidden, guard, round, sticky bits
    qnan = (EM << FW) | (1 << (FW - 1))
    return f"""\
// {name}: IEEE addition, {EW}-bit exponent, {FW}-bit fraction, round to nearest even.
function [{W - 1}:0] {name};
    input [{W - 1}:0] a;
    input [{W - 1}:0] b;
    reg [{W - 1}:0] x, y;
    reg sx, sy;
    reg [{EW - 1}:0] ex, ey;
    reg [{EW}:0] xe, ye, d, e, lz, sh;
    reg [{SW - 1}:0] mx, my;
    reg [{SW}:0] s;
    reg st, found;
    reg [{W - 2}:0] mag;
    integer i;
    begin
        if (a[{W - 2}:0] >= b[{W - 2}:0]) begin x = a; y = b; end else begin x = b; y = a; end
        sx = x[{W - 1}];
        sy = y[{W - 1}];
        ex = x[{W - 2}:{FW}];
        ey = y[{W - 2}:{FW}];
        if ((ex == {EM} && x[{FW - 1}:0] != 0) || (ey == {EM} && y[{FW - 1}:0] != 0) || (ex == {EM} && ey == {EM} && sx != sy))
            {name} = {W}'h{qnan:x};
        else if (ex == {EM})
            {name} = x;
        else begin
            xe = (ex == 0) ? 1 : {{1'b0, ex}};
            ye = (ey == 0) ? 1 : {{1'b0, ey}};
            mx = {{ex != 0, x[{FW - 1}:0], 3'b000}};
            my = {{ey != 0, y[{FW - 1}:0], 3'b000}};
            d = xe - ye;
            st = 0;
            for (i = 0; i < {SW}; i = i + 1)
                if (i < d && my[i]) st = 1;
            my = (d >= {SW}) ? 0 : (my >> d);
            my[0] = my[0] | st;
            s = (sx == sy) ? ({{1'b0, mx}} + {{1'b0, my}}) : ({{1'b0, mx}} - {{1'b0, my}});
            if (s == 0)
                {name} = {{sx & sy, {W - 1}'d0}};
            else begin
                if (s[{SW}]) begin
                    s = {{1'b0, s[{SW}:2], s[1] | s[0]}};
                    e = xe + 1;
                end else begin
                    lz = 0;
                    found = 0;
                    for (i = {SW - 1}; i >= 0; i = i - 1)
                        if (!found) begin
                            if (s[i]) found = 1;
                            else lz = lz + 1;
                        end
                    sh = (lz < xe - 1) ? lz : xe - 1;
                    s = s << sh;
                    e = s[{SW - 1}] ? xe - sh : 0;
                end
                mag = {{e[{EW - 1}:0], s[{SW - 2}:3]}} + (s[2] & (s[1] | s[0] | s[3]));
                {name} = (e >= {EM}) ? {{sx, {EW}'h{EM:x}, {FW}'d0}} : {{sx, mag}};
            end
        end
    end
endfunction
"""


F32_MUL = """\
// a * b in fp32, round to nearest even, subnormal operands and results: 24 x 24 significand bits,
// normalized to bit 47, shifted further right into the subnormal range (sticky kept), rounded once.
// Biased exponent of the result: l + xa + xb - 173 (l: the product's leading one).
function [31:0] f32_mul;
    input [31:0] a;
    input [31:0] b;
    reg sg;
    reg [7:0] ea, eb;
    reg [47:0] m;
    reg [5:0] l;
    reg [9:0] ep, sh;
    reg [8:0] e;
    reg st;
    reg [30:0] mag;
    integer i;
    begin
        sg = a[31] ^ b[31];
        ea = a[30:23];
        eb = b[30:23];
        if ((ea == 8'hff && a[22:0] != 0) || (eb == 8'hff && b[22:0] != 0) || (ea == 8'hff && b[30:0] == 0) || (eb == 8'hff && a[30:0] == 0))
            f32_mul = 32'h7fc00000;
        else if (ea == 8'hff || eb == 8'hff)
            f32_mul = {sg, 8'hff, 23'd0};
        else if (a[30:0] == 0 || b[30:0] == 0)
            f32_mul = {sg, 31'd0};
        else begin
            m = {ea != 0, a[22:0]} * {eb != 0, b[22:0]};
            l = 0;
            for (i = 0; i < 48; i = i + 1)
                if (m[i]) l = i;
            m = m << (47 - l);
            ep = l + ((ea == 0) ? 10'd1 : ea) + ((eb == 0) ? 10'd1 : eb);
            sh = (ep >= 174) ? 10'd0 : 10'd174 - ep;
            e = (ep >= 174) ? ep - 173 : 9'd0;
            st = 0;
            for (i = 0; i < 48; i = i + 1)
                if (i < sh && m[i]) st = 1;
            m = (sh >= 48) ? 48'd0 : (m >> sh);
            m[0] = m[0] | st;
            if (ep >= 173 + 255)
                f32_mul = {sg, 8'hff, 23'd0};
            else begin
                mag = {e[7:0], m[46:24]} + (m[23] & ((|m[22:0]) | m[24]));
                f32_mul = {sg, mag};
            end
        end
    end
endfunction
"""

F16_TO_F32 = """\
// fp16 -> fp32, exact (subnormals normalized; NaN canonical).
function [31:0] f16_to_f32;
    input [15:0] x;
    reg [4:0] e;
    reg [9:0] f;
    reg [3:0] l;
    integer i;
    begin
        e = x[14:10];
        f = x[9:0];
        if (e == 5'h1f)
            f16_to_f32 = (f != 0) ? 32'h7fc00000 : {x[15], 8'hff, 23'd0};
        else if (e == 0 && f == 0)
            f16_to_f32 = {x[15], 31'd0};
        else if (e == 0) begin
            l = 0;
            for (i = 0; i < 10; i = i + 1)
                if (f[i]) l = i;
            f = f << (10 - l);
            f16_to_f32 = {x[15], 8'd103 + l, f[9:0], 13'd0};
        end else
            f16_to_f32 = {x[15], e + 8'd112, f, 13'd0};
    end
endfunction
"""

F16_SHADD = """\
// x * w' for fp16 x and the integer weight w' (|w'| <= 15) as an exact fp32 value: the significand's
// shifted copies selected by the bits of |w'|, summed (shift-and-add), normalized; special values as IEEE.
function [31:0] f16_shadd;
    input [15:0] x;
    input signed [4:0] w;
    reg sg;
    reg [4:0] ex, a;
    reg [10:0] mx;
    reg [23:0] m;
    reg [4:0] l;
    integer i;
    begin
        a = w[4] ? -w : w;
        sg = x[15] ^ w[4];
        ex = x[14:10];
        if ((ex == 5'h1f && x[9:0] != 0) || (ex == 5'h1f && a == 0))
            f16_shadd = 32'h7fc00000;
        else if (ex == 5'h1f)
            f16_shadd = {sg, 8'hff, 23'd0};
        else if (x[14:0] == 0 || a == 0)
            f16_shadd = {sg, 31'd0};
        else begin
            mx = {ex != 0, x[9:0]};
            m = (a[0] ? {13'd0, mx} : 24'd0) + (a[1] ? {12'd0, mx, 1'b0} : 24'd0)
              + (a[2] ? {11'd0, mx, 2'b0} : 24'd0) + (a[3] ? {10'd0, mx, 3'b0} : 24'd0);
            l = 0;
            for (i = 0; i < 15; i = i + 1)
                if (m[i]) l = i;
            m = m << (23 - l);
            f16_shadd = {sg, 8'd102 + l + ((ex == 0) ? 8'd1 : {3'd0, ex}), m[22:0]};
        end
    end
endfunction
"""


F32_ADD = add_function("f32_add", 8, 23)
F16_ADD = add_function("f16_add", 5, 10)


def _widths(act: str) -> tuple[str, int, int, int, int, int]:
    """Function-name prefix, exponent and fraction widths, total width, all-ones exponent, bias."""
    f = ACT[act]
    return ("f16" if act == "fp16" else act), f.EW, f.FW, 1 + f.EW + f.FW, (1 << f.EW) - 1, (1 << (f.EW - 1)) - 1


def _nan16(act: str) -> str:
    _, EW, FW, W, EM, _ = _widths(act)
    return f"{W}'h{(EM << FW) | (1 << (FW - 1)):x}"


def dq_function(act: str) -> str:
    """The dequantizer (-1)^ws wm * s rounded once to the format. fp16 keeps its fixed-point form (F16_DQ: U in
    units of the smallest subnormal, 45 bits); a wider exponent range normalizes the product at its leading one."""
    if act == "fp16":
        return F16_DQ
    pre, EW, FW, W, EM, bias = _widths(act)
    name, PW = f"{pre}_dq", FW + 5  # wm * significand: 4 + FW + 1 bits
    return f"""\
// {act}((-1)^ws * wm * s), one rounding: p = wm * significand(s) ({PW} bits) is exact; its leading one l sets the
// result's biased exponent E = max(es, 1) + l - {FW}; from E >= 1 the normalized p is rounded to {FW + 1} significant
// bits (a carry moves into the exponent, up to inf); below, p << (max(es, 1) - 1) is an exact subnormal.
function [{W - 1}:0] {name};
    input ws;
    input [3:0] wm;
    input [{W - 1}:0] s;
    reg sg;
    reg [{EW - 1}:0] es;
    reg [{PW - 1}:0] p, pn;
    reg [{PW + FW - 1}:0] u;
    reg [3:0] l;
    reg [{EW + 1}:0] ef;
    reg [{W - 2}:0] mag;
    integer i;
    begin
        sg = ws ^ s[{W - 1}];
        es = s[{W - 2}:{FW}];
        if (es == {EW}'h{EM:x} && (s[{FW - 1}:0] != 0 || wm == 0))
            {name} = {_nan16(act)};
        else if (es == {EW}'h{EM:x})
            {name} = {{sg, {EW}'h{EM:x}, {FW}'d0}};
        else if (wm == 0 || s[{W - 2}:0] == 0)
            {name} = {{sg, {W - 1}'d0}};
        else begin
            p = wm * {{es != 0, s[{FW - 1}:0]}};
            l = 0;
            for (i = 0; i < {PW}; i = i + 1)
                if (p[i]) l = i;
            ef = ((es == 0) ? {EW + 2}'d1 : {{2'd0, es}}) + l;
            if (ef < {FW + 1}) begin
                u = p << (((es == 0) ? {EW}'d1 : es) - 1);
                {name} = {{sg, {EW}'d0, u[{FW - 1}:0]}};
            end else begin
                pn = p << ({PW - 1} - l);
                mag = {{ef[{EW - 1}:0] - {EW}'d{FW}, pn[{PW - 2}:{PW - 1 - FW}]}} + (pn[{PW - 2 - FW}] & ((|pn[{PW - 3 - FW}:0]) | pn[{PW - 1 - FW}]));
                {name} = (ef >= {EM + FW}) ? {{sg, {EW}'h{EM:x}, {FW}'d0}} : {{sg, mag}};
            end
        end
    end
endfunction
"""


def _f32_ranged(act: str) -> bool:
    """Whether products of the format can leave fp32's normal range (bf16: yes; fp16: never)."""
    f = ACT[act]
    return 2 * f.emin < -149 + 23 or 2 * (f.emax + 1) > 128


def mul_function(act: str) -> str:
    """x * y of two format values into fp32: exact for fp16; for bf16 rounded where it leaves fp32's normal range."""
    pre, EW, FW, W, EM, bias = _widths(act)
    name, P = f"{pre}_mul", FW + 1
    PW, LW, off = 2 * P, max(1, (2 * P - 1).bit_length()), 127 - 2 * bias - 2 * FW
    head = f"""\
function [31:0] {name};
    input [{W - 1}:0] x;
    input [{W - 1}:0] y;
    reg sg;
    reg [{EW - 1}:0] ex, ey;
    reg [{PW - 1}:0] m;
    reg [{LW - 1}:0] l;
"""
    special = f"""\
    begin
        sg = x[{W - 1}] ^ y[{W - 1}];
        ex = x[{W - 2}:{FW}];
        ey = y[{W - 2}:{FW}];
        if ((ex == {EW}'h{EM:x} && x[{FW - 1}:0] != 0) || (ey == {EW}'h{EM:x} && y[{FW - 1}:0] != 0) || (ex == {EW}'h{EM:x} && y[{W - 2}:0] == 0) || (ey == {EW}'h{EM:x} && x[{W - 2}:0] == 0))
            {name} = 32'h7fc00000;
        else if (ex == {EW}'h{EM:x} || ey == {EW}'h{EM:x})
            {name} = {{sg, 8'hff, 23'd0}};
        else if (x[{W - 2}:0] == 0 || y[{W - 2}:0] == 0)
            {name} = {{sg, 31'd0}};
        else begin
            m = {{ex != 0, x[{FW - 1}:0]}} * {{ey != 0, y[{FW - 1}:0]}};
            l = 0;
            for (i = 0; i < {PW}; i = i + 1)
                if (m[i]) l = i;
"""
    if not _f32_ranged(act):
        return (f"// x * y for {act} x, y as an exact fp32 value: {P} x {P} significand bits, normalized, never rounded.\n"
                + head + "    reg [8:0] e;\n    integer i;\n" + special + f"""\
            e = l + ((ex == 0) ? {EW}'d1 : ex) + ((ey == 0) ? {EW}'d1 : ey) + {off};
            m = m << ({PW - 1} - l);
            {name} = {{sg, e[7:0], m[{PW - 2}:0], {23 - (PW - 1)}'b{'0' * (23 - (PW - 1))}}};
        end
    end
endfunction
""")
    # value = m 2^(ex' + ey' - K2), K2 = 2 (bias + FW); fp32 subnormal field = m 2^(ex' + ey' - (K2 - 149))
    k2 = 2 * (bias + FW)
    z = k2 - 149  # ex' + ey' at which m is the subnormal field unshifted
    return (f"// x * y for {act} x, y into fp32: {P} x {P} significand bits, exact while the product is an fp32 normal number;\n"
            f"// below 2^-126 the product m 2^(ex + ey - {k2}) is shifted into the subnormal field and rounded to nearest\n"
            f"// even (sticky kept), from 2^128 up it is inf (exponent extremes of a format with fp32's range).\n"
            + head + f"""\
    reg [9:0] ep, es2, sh;
    reg [7:0] e;
    reg [{PW - 1}:0] q;
    reg st;
    reg [30:0] mag;
    integer i;
""" + special + f"""\
            es2 = ((ex == 0) ? 10'd1 : ex) + ((ey == 0) ? 10'd1 : ey);
            ep = es2 + l;  // the product's biased fp32 exponent + {k2 - 127}
            if (ep >= {k2 - 127 + 255})
                {name} = {{sg, 8'hff, 23'd0}};
            else if (ep >= {k2 - 127 + 1}) begin
                e = ep - {k2 - 127};
                m = m << ({PW - 1} - l);
                {name} = {{sg, e, m[{PW - 2}:0], {23 - (PW - 1)}'d0}};
            end else if (es2 >= {z}) begin
                mag = m << (es2 - {z});  // exact: below 2^-126 the field holds it
                {name} = {{sg, mag}};
            end else begin
                sh = {z} - es2;
                if (sh > {PW})
                    {name} = {{sg, 31'd0}};  // below half the smallest subnormal
                else begin
                    st = 0;
                    for (i = 0; i < {PW}; i = i + 1)
                        if (i + 1 < sh && m[i]) st = 1;
                    q = m >> sh;
                    mag = q + (m[sh - 1] & (st | q[0]));
                    {name} = {{sg, mag}};
                end
            end
        end
    end
endfunction
""")


def to_f32_function(act: str) -> str:
    """Exact widening into fp32."""
    if act == "fp16":
        return F16_TO_F32
    pre, EW, FW, W, EM, bias = _widths(act)
    assert EW == 8, "a format with fp32's exponent field widens by concatenation"
    name = f"{pre}_to_f32"
    return f"""\
// {act} -> fp32, exact: the upper {W} bits of the fp32 pattern (subnormals too: the same exponent field); NaN canonical.
function [31:0] {name};
    input [{W - 1}:0] x;
    begin
        {name} = (x[{W - 2}:{FW}] == {EW}'h{EM:x} && x[{FW - 1}:0] != 0) ? 32'h7fc00000 : {{x, {32 - W}'d0}};
    end
endfunction
"""


def shadd_function(act: str) -> str:
    """x * w' (|w'| <= 15) by shift-and-add of x's significand into fp32; for bf16 with fp32 subnormal and overflow results."""
    if act == "fp16":
        return F16_SHADD
    pre, EW, FW, W, EM, bias = _widths(act)
    name, P = f"{pre}_shadd", FW + 1
    off = bias + FW  # the significand's unit is 2^(ex' - off)
    return f"""\
// x * w' for {act} x and the integer weight w' (|w'| <= 15) in fp32, exact while finite: the significand's
// shifted copies selected by the bits of |w'|, summed (shift-and-add), normalized; a result below 2^-126 is the
// sum shifted into the subnormal field (exact: a multiple of 2^-149), from 2^128 up inf; special values as IEEE.
function [31:0] {name};
    input [{W - 1}:0] x;
    input signed [4:0] w;
    reg sg;
    reg [{EW - 1}:0] ex;
    reg [4:0] a;
    reg [{P - 1}:0] mx;
    reg [23:0] m, mn;
    reg [4:0] l;
    reg [9:0] ep;
    integer i;
    begin
        a = w[4] ? -w : w;
        sg = x[{W - 1}] ^ w[4];
        ex = x[{W - 2}:{FW}];
        if ((ex == {EW}'h{EM:x} && x[{FW - 1}:0] != 0) || (ex == {EW}'h{EM:x} && a == 0))
            {name} = 32'h7fc00000;
        else if (ex == {EW}'h{EM:x})
            {name} = {{sg, 8'hff, 23'd0}};
        else if (x[{W - 2}:0] == 0 || a == 0)
            {name} = {{sg, 31'd0}};
        else begin
            mx = {{ex != 0, x[{FW - 1}:0]}};
            m = (a[0] ? {{{24 - P}'d0, mx}} : 24'd0) + (a[1] ? {{{23 - P}'d0, mx, 1'b0}} : 24'd0)
              + (a[2] ? {{{22 - P}'d0, mx, 2'b0}} : 24'd0) + (a[3] ? {{{21 - P}'d0, mx, 3'b0}} : 24'd0);
            l = 0;
            for (i = 0; i < {P + 4}; i = i + 1)
                if (m[i]) l = i;
            ep = ((ex == 0) ? 10'd1 : ex) + l;  // the biased fp32 exponent + {off - 127}
            mn = m << (23 - l);
            if (ep >= {off - 127 + 255})
                {name} = {{sg, 8'hff, 23'd0}};
            else if (ep >= {off - 127 + 1})
                {name} = {{sg, ep[7:0] - 8'd{off - 127}, mn[22:0]}};
            else begin
                mn = m << (((ex == 0) ? 10'd1 : ex) + {149 - off});
                {name} = {{sg, 8'd0, mn[22:0]}};
            end
        end
    end
endfunction
"""


def pow2_function(act: str) -> str:
    """v * 2^b (b <= 3) for a widened table entry (lut-tc): an exponent increment for fp16 (never subnormal,
    never overflowing); for bf16 b doublings that also handle fp32 subnormals and overflow."""
    if act == "fp16":
        return """\
// v * 2^b for a widened fp16 value (never an fp32 subnormal): an exponent increment; 0, inf, NaN kept.
function [31:0] f32_pow2;
    input [31:0] v;
    input [1:0] b;
    begin
        f32_pow2 = (v[30:23] == 8'd0 || v[30:23] == 8'hff) ? v : {v[31], v[30:23] + b, v[22:0]};
    end
endfunction
"""
    return """\
// v * 2^b (b <= 3) in fp32 for a widened bf16 value, exact or inf: b doublings, each an exponent increment; a
// subnormal's pattern doubles (its carry into the exponent field is the step to 2^-126); from 2^127 a doubling is inf.
function [31:0] f32_pow2;
    input [31:0] v;
    input [1:0] b;
    reg [31:0] r;
    integer i;
    begin
        r = v;
        for (i = 0; i < 3; i = i + 1)
            if (i < b && r[30:23] != 8'hff)
                r = (r[30:23] == 8'd0) ? {r[31], r[29:0], 1'b0} : (r[30:23] == 8'hfe) ? {r[31], 8'hff, 23'd0} : {r[31], r[30:23] + 8'd1, r[22:0]};
        f32_pow2 = r;
    end
endfunction
"""


def half_function(act: str) -> str:
    """A / 2 in the lut-tc epilogue: exact for fp16 (A is 0 or at least 2^-24); for bf16 rounded below 2^-125."""
    if act == "fp16":
        return """\
// A / 2 for the epilogue's A (0 or at least 2^-24 in magnitude: never subnormal): an exponent decrement.
function [31:0] f32_half;
    input [31:0] v;
    begin
        f32_half = (v[30:23] == 8'd0 || v[30:23] == 8'hff) ? v : {v[31], v[30:23] - 8'd1, v[22:0]};
    end
endfunction
"""
    return """\
// A / 2 in fp32, round to nearest even: an exponent decrement from 2^-125 up; below, the significand (hidden bit
// included) shifted right by one, the lost bit rounded to even (the carry can reach 2^-126); inf, NaN kept.
function [31:0] f32_half;
    input [31:0] v;
    reg [23:0] m;
    begin
        m = {v[30:23] != 8'd0, v[22:0]};
        if (v[30:23] == 8'hff)
            f32_half = v;
        else if (v[30:23] >= 8'd2)
            f32_half = {v[31], v[30:23] - 8'd1, v[22:0]};
        else
            f32_half = {v[31], 8'd0, m[23:1]} + (m[0] & m[1]);
    end
endfunction
"""


def unit_functions(act: str) -> dict:
    """The 16-bit units of format `act` (Verilog text) and their names: dq, mul, add, to_f32, shadd."""
    pre, EW, FW, *_ = _widths(act)
    return dict(
        pre=pre, dq=dq_function(act), mul=mul_function(act), add=add_function(f"{pre}_add", EW, FW),
        to_f32=to_f32_function(act), shadd=shadd_function(act), pow2=pow2_function(act), half=half_function(act),
    )


def functions(*extra: str, act: str = "fp16") -> str:
    u = unit_functions(act)
    return "\n".join((u["dq"], u["mul"], F32_ADD) + extra)


class UnitsConfig:
    """A module exposing the units combinationally (rtl/tb/fp16_units_tb.py tests them alone on operands the
    arrays never produce: fp32 subnormals, exponent extremes); act="bf16" the bf16 units, with lut-tc's 2^b and
    A / 2 steps. Duck-types the configuration rtl.sim.build takes (name, to_dict, design_record.generator)."""

    class design_record:  # noqa: N801 - read as cfg.design_record.generator
        generator = "rtl.gen.fp16"

    def __init__(self, act: str = "fp16"):
        if act not in ACT:
            raise ValueError(f"act={act!r} is not an activation format; use act=fp16 or act=bf16")
        self.act = act

    @property
    def name(self) -> str:
        return f"{self.act}_units"

    def to_dict(self) -> dict:
        return {"design": "fp16-units"} if self.act == "fp16" else {"design": "fp16-units", "act": self.act}


def generate(cfg=None) -> str:
    act = getattr(cfg, "act", "fp16")
    u = unit_functions(act)
    pre = u["pre"]
    ports = ("input wire [31:0] a, input wire [31:0] b, input wire [15:0] x, input wire [15:0] y, "
             "input wire ws, input wire [3:0] wm, input wire [15:0] s, "
             "output wire [31:0] sum, output wire [31:0] prod, output wire [15:0] dq, "
             "output wire [15:0] sum16, output wire [31:0] mul32, output wire [31:0] wide, output wire [31:0] shadd")
    extra, assigns = (), []
    if act != "fp16":  # lut-tc's format-dependent fp32 steps: tested here on any fp32 operand
        ports += ", output wire [31:0] pow2, output wire [31:0] half"
        extra = (u["pow2"], u["half"])
        assigns = ["assign pow2 = f32_pow2(a, wm[1:0]);", "assign half = f32_half(a);"]
    return "\n".join([
        "`timescale 1ns/1ps",
        f"module {UnitsConfig(act).name} ({ports});",
        functions(u["add"], F32_MUL, u["to_f32"], u["shadd"], *extra, act=act),
        f"assign shadd = {pre}_shadd(x, ws ? -$signed({{1'b0, wm}}) : $signed({{1'b0, wm}}));",
        f"assign sum16 = {pre}_add(x, y);",
        "assign mul32 = f32_mul(a, b);",
        f"assign wide = {pre}_to_f32(x);",
        "assign sum = f32_add(a, b);",
        f"assign prod = {pre}_mul(x, y);",
        f"assign dq = {pre}_dq(ws, wm, s);",
        *assigns,
        "endmodule",
        "",
    ])


def module_head(v, c, what: str, golden: str, units: str) -> None:
    """The header comments, the stream ports every FP16 array shares (hwsim/designs/_fp16.py) and the functions."""
    M, N, K, B, EL = c.M, c.N, c.K, c.bits, c.lanes
    v(f"// {c.name}: {what if c.act == 'fp16' else what.replace('FP16', c.act.upper()).replace('fp16', c.act)}")
    v(f"// Generated by lowbit rtl/gen (do not edit). Arithmetic: hwsim.golden.{golden}; interface: hwsim/designs/_fp16.py.")
    v(f"// design={c.design} M={M} N={N} K={K} B={B} G={c.group} lanes={EL}" + ("" if c.act == "fp16" else f" act={c.act}"))
    v("`timescale 1ns/1ps")
    v(f"module {c.name} (")
    for line in ("input wire clk", "input wire rst_n", "input wire in_valid", "output wire in_ready",
                 f"input wire [{M * K * 16 - 1}:0] in_act", f"input wire [{N * K * B - 1}:0] in_w",
                 f"input wire [{N * B - 1}:0] in_zero", f"input wire [{N * 16 - 1}:0] in_scale", "input wire in_last",
                 "output wire out_valid", "input wire out_ready", f"output wire [{EL * 32 - 1}:0] out_data"):
        v(f"    {line},")
    v("    output wire out_last")
    v(");")
    v(units)


def output_bank(v, c, result: str, note: str = "") -> None:
    """D beats of `lanes` results (slot m*N + n of the wires result_<m>_<n>), loaded at once and shifted out a beat
    per out_fire, then the module's end."""
    N, EL, D = c.N, c.lanes, c.drain_beats
    v(f"// ---- output bank: D beats of `lanes` results, slot m*N + n{note}")
    for i in range(D):
        slots = [i * EL + lane for lane in range(EL)]
        cat = ", ".join(f"{result}_{s // N}_{s % N}" for s in reversed(slots))
        nxt = f"ob_{i + 1}" if i + 1 < D else f"{EL * 32}'d0"
        v(f"reg [{EL * 32 - 1}:0] ob_{i};")
        v(f"always @(posedge clk) if (load) ob_{i} <= {{{cat}}}; else if (out_fire) ob_{i} <= {nxt};")
    v("assign out_data = ob_0;")
    v("endmodule")
