"""Vector unit generator: the integer units of hwsim/vector.py (RMSNorm, I-LayerNorm, SiLU, ShiftGELU,
Shiftmax, and the elementwise requant, add, mul, rope) as one sequential single-lane Verilog-2005 module per
unit, bit-exact with hwsim.vector.

Interface (every unit; fields of a row are sampled when the row is taken):
    clk, rst_n (synchronous, active low)
    in_valid / in_ready     one row: in_x [L*IW] (x_i at bits i*IW, two's complement)
      rmsnorm, layernorm:   in_g [L*8] gains, in_b [L*8] bias (layernorm), in_eps [EPSW] eps_int,
                            in_mant [16], in_shift [6]           (the output dyadic pair)
      silu, gelu:           in_mant_i, in_shift_i, in_mant_o, in_shift_o
      shiftmax:             in_mant, in_shift                    (dyadic(S_in * 2^F))
      requant:              in_x [L*IW] (IW 8, 16, 32), in_mant [16], in_shift [6]
      add:                  in_a, in_b [L*IW] (no in_x), in_mant_a, in_mant_b [16], in_shift [6] (one shift for both)
      mul:                  in_a, in_b [L*8] (no in_x), in_mant [16], in_shift [6]
      rope:                 in_x [L*IW], in_c, in_s [(L/2)*16] the row's cos / sin table (signed, |v| <= 2^14,
                            entry j at bits j*16), in_mant [16], in_shift [6]
    out_valid / out_ready   the output row, out_y [L*OW] (y_i at bits i*OW; OW = 8 except requant and add's
                            out_bits; Shiftmax unsigned, the rest two's complement)
in_ready is high exactly when the unit is idle; out_valid holds until out_ready. The row registers
rotate one element per step, so the datapath sees one element (the row's head) and needs no read muxes;
outputs shift into their row register. Phases and cycle counts: hwsim/arrays/vector_unit.py;
rtl.gen.common.write_verilog writes the file (the configuration names this generator).
Shifts by a field value are clamped to the operand's width (the result is the same: every bit is the
sign, or the rounding sum is below one unit).
"""

from __future__ import annotations

from hwsim import vector as vec
from hwsim.arrays.vector_unit import VectorUnitConfig
from rtl.gen.common import V, clog2, sext

MW = vec.MANT_BITS
SHW = 6  # shift fields: 0..63


def _shift_clamp(v: V, sh: str, width: int, name: str) -> str:
    """A wire holding min(sh, width) (a 6-bit field)."""
    if width >= (1 << SHW) - 1:
        return sh
    v(f"wire [{SHW - 1}:0] {name} = ({sh} > {SHW}'d{width}) ? {SHW}'d{width} : {sh};")
    return name


def rshift_round(v: V, p: str, width: int, sh: str, name: str) -> int:
    """`name` = hwsim.golden.rshift_round(p, sh) for a signed `width`-bit p and a 6-bit shift field;
    returns its width (width + 1)."""
    sc = _shift_clamp(v, sh, width, f"{name}_sc")
    v(f"wire signed [{width}:0] {name}_h = ({sc} == {SHW}'d0) ? {width + 1}'sd0 : $signed({{{{{width}{{1'b0}}}}, 1'b1}} << ({sc} - {SHW}'d1));")
    v(f"wire signed [{width}:0] {name}_pr = $signed({sext(p, width, width + 1)}) + {name}_h;")
    v(f"wire signed [{width}:0] {name} = {name}_pr >>> {sc};")
    return width + 1


def shift_exp(v: V, z: str, zw: int, F: int, name: str) -> None:
    """`name` [F:0] = hwsim.vector.shift_exp(z) for a signed zw-bit z <= 0."""
    ZC = F + 6  # holds -2^(F+4) .. 0
    lim = 1 << (F + 4)
    if zw > F + 5:
        v(f"wire {name}_lo = {z} < -{zw}'sd{lim};")
        v(f"wire signed [{ZC - 1}:0] {name}_zc = {name}_lo ? -{ZC}'sd{lim} : {z}[{ZC - 1}:0];")
    else:
        v(f"wire signed [{ZC - 1}:0] {name}_zc = {z};")
    v(f"wire signed [{ZC + 1}:0] {name}_p = {name}_zc + ({name}_zc >>> 1) - ({name}_zc >>> 4);  // ~ z log2(e)")
    v(f"wire signed [{ZC + 1}:0] {name}_nn = -{name}_p;")
    v(f"wire [{F + 4}:0] {name}_n = {name}_nn[{F + 4}:0];")
    v(f"wire [{F}:0] {name}_h = {F + 1}'d{1 << F} - (({{1'b0, {name}_n[{F - 1}:0]}} + {F + 1}'d1) >> 1);  // 1 + r/2")
    v(f"wire [{F}:0] {name} = {name}_h >> {name}_n[{F + 4}:{F}];  // 2^-q")


class _Divider:
    """Restoring divider for floor(2^K / dv): rm starts at 2^(K - QW) (< dv), one quotient bit a step."""

    def __init__(self, v: V, K: int, QW: int, DW: int):
        if K < QW:
            raise ValueError("divider: K < QW")
        self.K, self.QW, self.DW = K, QW, DW
        v(f"reg [{DW - 1}:0] dv; reg [{DW - 1}:0] rm; reg [{QW - 1}:0] qt;")
        v(f"wire [{DW}:0] rm2 = {{rm, 1'b0}};")
        v("wire dge = rm2 >= {1'b0, dv};")
        v(f"wire [{DW}:0] rmd = rm2 - {{1'b0, dv}};")

    def load(self, divisor: str) -> str:
        return f"dv <= {divisor}; rm <= {self.DW}'d{1 << (self.K - self.QW)}; qt <= {self.QW}'d0;"

    def step(self) -> str:
        return f"rm <= dge ? rmd[{self.DW - 1}:0] : rm2[{self.DW - 1}:0]; qt <= {{qt[{self.QW - 2}:0], dge}};"


def _rotate(reg: str, L: int, w: int) -> str:
    return f"{reg} <= {{{reg}[{w - 1}:0], {reg}[{L * w - 1}:{w}]}};" if L > 1 else ""


def _push(reg: str, L: int, w: int, val: str) -> str:
    return f"{reg} <= {{{val}, {reg}[{L * w - 1}:{w}]}};" if L > 1 else f"{reg} <= {val};"


def _clamp8(v: V, p: str, w: int, name: str) -> None:
    _clamp(v, p, w, 8, name)


def _clamp(v: V, p: str, w: int, ow: int, name: str) -> None:
    """`name` [ow] = clamp(p) to the signed ow-bit range, for a signed w-bit p (w > ow)."""
    hi, lo = (1 << (ow - 1)) - 1, 1 << (ow - 1)
    v(f"wire [{ow - 1}:0] {name} = ({p} > {w}'sd{hi}) ? {ow}'h{hi:x} : ({p} < -{w}'sd{lo}) ? {ow}'h{lo:x} : {p}[{ow - 1}:0];")


def _states(v: V, names: list[str]) -> dict:
    sw = clog2(len(names))
    v(f"localparam [{sw - 1}:0] " + ", ".join(f"{n} = {sw}'d{i}" for i, n in enumerate(names)) + ";")
    v(f"reg [{sw - 1}:0] st;")
    return {n: n for n in names}


def _header(cfg: VectorUnitConfig, v: V, ports: list[str], what: str):
    v(f"// {cfg.name}: {what}")
    v(f"// generated by rtl/gen/vector_unit.py; bit-exact with hwsim/vector.py; {cfg.latency} cycles from a row's")
    v(f"// accepting edge to its output edge, one row every {cfg.interval} cycles (hwsim/arrays/vector_unit.py)")
    v(f"module {cfg.name} (")
    v("    " + ",\n    ".join(ports))
    v(");")


def _common_ports(cfg: VectorUnitConfig, extra: list[str]) -> list[str]:
    L, IW = cfg.L, cfg.in_bits
    return (["input wire clk", "input wire rst_n", "input wire in_valid", "output wire in_ready", f"input wire [{L * IW - 1}:0] in_x"]
            + extra + ["output wire out_valid", "input wire out_ready", f"output wire [{L * 8 - 1}:0] out_y"])


def _finish(v) -> str:
    """The end every unit's state machine shares: the output row waits for out_ready, then the module closes."""
    v("        S_DONE: if (out_ready) st <= S_IDLE;")
    v("        default: st <= S_IDLE;")
    v("        endcase")
    v("    end")
    v("end")
    v("endmodule")
    return v.text()


def _norm(cfg: VectorUnitConfig) -> str:
    L, ns, ln, IW = cfg.L, cfg.norm_shape, cfg.unit == "layernorm", cfg.in_bits
    DB, SSW, TW, RTB, RB, QW = ns.d_bits, ns.ss_bits, ns.tw, ns.root_bits, ns.rb, ns.recip_bits
    P, A = ns.P, ns.A
    EPSW = max(1, ns.eps_max.bit_length())
    RMW = RTB + 3
    v = V()
    BB = ns.bias_bits  # LayerNorm's bias: int8, or int16 with ns.bias_frac fraction bits (int16 inputs)
    ports = [f"input wire [{L * 8 - 1}:0] in_g"] + ([f"input wire [{L * BB - 1}:0] in_b"] if ln else [])
    ports += [f"input wire [{EPSW - 1}:0] in_eps", f"input wire [{MW - 1}:0] in_mant", f"input wire [{SHW - 1}:0] in_shift"]
    _header(cfg, v, _common_ports(cfg, ports), "I-LayerNorm" if ln else "integer RMSNorm")
    names = (["S_IDLE", "S_SUM"] if ln else ["S_IDLE"]) + ["S_SQ", "S_SQRT", "S_DIV", "S_OUT", "S_DONE"]
    _states(v, names)
    v(f"reg [{clog2(max(L, RTB, QW) + 1) - 1}:0] cnt;")
    v(f"reg [{L * IW - 1}:0] xr; reg [{L * 8 - 1}:0] gr, yr;")
    if ln:
        v(f"reg [{L * BB - 1}:0] br;")
    SXW = vec.bits_signed(-(1 << (IW - 1)) * L, ((1 << (IW - 1)) - 1) * L)
    v(f"reg signed [{SXW - 1}:0] sx;  // row sum (layernorm)")
    v(f"reg [{EPSW - 1}:0] eps_r; reg [{MW - 1}:0] mant_r; reg [{SHW - 1}:0] sh_r;")
    v(f"reg [{SSW - 1}:0] ss; reg [{TW - 1}:0] t; reg [{RMW - 1}:0] rem; reg [{RTB - 1}:0] root;")
    v("assign in_ready = (st == S_IDLE);")
    v("assign out_valid = (st == S_DONE);")
    v("assign out_y = yr;")
    v(f"wire signed [{IW - 1}:0] xh = xr[{IW - 1}:0];")
    v("wire signed [7:0] gh = gr[7:0];")
    if ln:
        v(f"wire signed [{DB - 1}:0] dh = xh * {DB}'sd{L} - sx;  // L x - sum x")
        v(f"wire signed [{SXW - 1}:0] sx_n = sx + xh;")
    else:
        v(f"wire signed [{DB - 1}:0] dh = xh;")
    v(f"wire signed [{2 * DB - 1}:0] sq = dh * dh;")
    v(f"wire [{SSW - 1}:0] ss_n = ss + sq[{min(2 * DB, SSW) - 1}:0];")
    eps = f"{{{SSW - EPSW}'d0, eps_r}}" if SSW > EPSW else "eps_r"
    v(f"wire [{SSW - 1}:0] ss_e = ss_n + {eps};")
    v(f"wire [{TW - 1}:0] t0 = {{{TW - SSW}'d0, ss_e}} << {2 * P};" if TW > SSW else f"wire [{TW - 1}:0] t0 = ss_e << {2 * P};")
    v("// isqrt step: bring down two bits, try root*4 + 1")
    v(f"wire [{RMW - 1}:0] q_rem4 = {{rem[{RMW - 3}:0], t[{TW - 1}:{TW - 2}]}};")
    v(f"wire [{RMW - 1}:0] q_trial = {{1'b0, root, 2'b01}};")
    v("wire q_ge = q_rem4 >= q_trial;")
    v(f"wire [{RTB - 1}:0] q_root = {{root[{RTB - 2}:0], q_ge}};")
    v(f"wire [{RTB - 1}:0] s_min = (q_root < {RTB}'d{vec.NORM_S_MIN}) ? {RTB}'d{vec.NORM_S_MIN} : q_root;  // max(isqrt, 2^8)")
    div = _Divider(v, RB, QW, RTB)
    PDW = DB + QW + 1
    c = RB - P - A
    v(f"wire signed [{PDW - 1}:0] pd = dh * $signed({{1'b0, qt}});")
    v(f"wire signed [{PDW}:0] a_w = (pd + {PDW + 1}'sd{1 << (c - 1)}) >>> {c};  // rshift_round(d r, RB - P - A)")
    AB = ns.a_bits
    AGW = AB + 8 + MW + 1
    v(f"wire signed [{AB - 1}:0] a = a_w[{AB - 1}:0];")
    v(f"wire signed [{AGW - 1}:0] agm = a * gh * $signed({{1'b0, mant_r}});")
    if ln and ns.bias_frac:  # one rounding of the biased value (hwsim.vector.norm_out; sh_r >= bias_frac)
        BF = ns.bias_frac
        v(f"wire [{SHW - 1}:0] kb = sh_r - {SHW}'d{BF};")
        v(f"wire signed [{AGW - 1}:0] pk = agm >>> kb;")
        v(f"wire signed [{AGW + 1}:0] pb = pk + $signed(br[{BB - 1}:0]) + {AGW + 2}'sd{1 << (BF - 1)};")
        v(f"wire signed [{AGW + 1}:0] yb = pb >>> {BF};")
        _clamp8(v, "yb", AGW + 2, "y8")
    elif ln:
        yw = rshift_round(v, "agm", AGW, "sh_r", "yq")
        v(f"wire signed [{yw}:0] yb = yq + $signed(br[7:0]);")
        _clamp8(v, "yb", yw + 1, "y8")
    else:
        yw = rshift_round(v, "agm", AGW, "sh_r", "yq")
        _clamp8(v, "yq", yw, "y8")
    CW = clog2(max(L, RTB, QW) + 1)

    def last(n: int) -> str:
        return f"cnt == {CW}'d{n - 1}"

    v("always @(posedge clk) begin")
    v("    if (!rst_n) begin")
    v("        st <= S_IDLE;")
    v("    end else begin")
    v("        case (st)")
    v("        S_IDLE: if (in_valid) begin")
    v(f"            xr <= in_x; gr <= in_g; eps_r <= in_eps; mant_r <= in_mant; sh_r <= in_shift; ss <= {SSW}'d0; sx <= {SXW}'sd0; cnt <= {CW}'d0;")
    if ln:
        v("            br <= in_b; st <= S_SUM;")
    else:
        v("            st <= S_SQ;")
    v("        end")
    if ln:
        v(f"        S_SUM: begin sx <= sx_n; {_rotate('xr', L, IW)} cnt <= ({last(L)}) ? {CW}'d0 : cnt + {CW}'d1; if ({last(L)}) st <= S_SQ; end")
    v(f"        S_SQ: begin ss <= ss_n; {_rotate('xr', L, IW)} cnt <= cnt + {CW}'d1;")
    v(f"            if ({last(L)}) begin t <= t0; rem <= {RMW}'d0; root <= {RTB}'d0; cnt <= {CW}'d0; st <= S_SQRT; end")
    v("        end")
    v(f"        S_SQRT: begin rem <= q_ge ? q_rem4 - q_trial : q_rem4; root <= q_root; t <= t << 2; cnt <= cnt + {CW}'d1;")
    v(f"            if ({last(RTB)}) begin {div.load('s_min')} cnt <= {CW}'d0; st <= S_DIV; end")
    v("        end")
    v(f"        S_DIV: begin {div.step()} cnt <= cnt + {CW}'d1; if ({last(QW)}) begin cnt <= {CW}'d0; st <= S_OUT; end end")
    rot = " ".join(_rotate(r, L, {"xr": IW, "br": BB}.get(r, 8)) for r in (["xr", "gr", "br"] if ln else ["xr", "gr"]))
    v(f"        S_OUT: begin {_push('yr', L, 8, 'y8')} {rot} cnt <= cnt + {CW}'d1; if ({last(L)}) st <= S_DONE; end")
    return _finish(v)


def _gate(cfg: VectorUnitConfig) -> str:
    L, F, gelu = cfg.L, cfg.F, cfg.unit == "gelu"
    v = V()
    ports = [f"input wire [{MW - 1}:0] in_mant_i", f"input wire [{SHW - 1}:0] in_shift_i",
             f"input wire [{MW - 1}:0] in_mant_o", f"input wire [{SHW - 1}:0] in_shift_o"]
    _header(cfg, v, _common_ports(cfg, ports), "ShiftGELU, x sigmoid(1.6875 x)" if gelu else "integer SiLU, x sigmoid(x)")
    _states(v, ["S_IDLE", "S_EXP", "S_DIV", "S_OUT", "S_DONE"])
    QW = cfg.div_bits
    CW = clog2(max(L, QW) + 1)
    v(f"reg [{CW - 1}:0] cnt, ec;")
    v(f"reg [{L * 8 - 1}:0] xr, yr;")
    v(f"reg [{MW - 1}:0] mi_r, mo_r; reg [{SHW - 1}:0] si_r, so_r; reg [{F}:0] ea_r;")
    v("assign in_ready = (st == S_IDLE);")
    v("assign out_valid = (st == S_DONE);")
    v("assign out_y = yr;")
    v("wire signed [7:0] xh = xr[7:0];")
    UW = 8 + MW + 1
    v(f"wire signed [{UW - 1}:0] up = xh * $signed({{1'b0, mi_r}});")
    sc = _shift_clamp(v, "si_r", UW - 1, "si_c")
    v(f"wire signed [{UW - 1}:0] u = up >>> {sc};  // x S_in in units 2^-F")
    VW = UW + 1
    if gelu:
        v(f"wire signed [{VW - 1}:0] vv = u + (u >>> 1) + (u >>> 3) + (u >>> 4);  // 1.6875 u")
    else:
        v(f"wire signed [{VW - 1}:0] vv = u;")
    v(f"wire signed [{VW - 1}:0] mv = (vv > {VW}'sd0) ? vv : {VW}'sd0;")
    v(f"wire signed [{VW}:0] za = vv - mv;")
    v(f"wire signed [{VW}:0] zb = -mv;")
    shift_exp(v, "za", VW + 1, F, "ea")
    shift_exp(v, "zb", VW + 1, F, "eb")
    div = _Divider(v, F + vec.RECIP_EXTRA, QW, F + 2)
    GW = QW + F + 1
    v(f"wire [{GW - 1}:0] gp = qt * ea_r;")
    GGW = GW - F - vec.PROB_BITS
    v(f"wire [{GGW - 1}:0] gg = gp[{GW - 1}:{F + vec.PROB_BITS}];  // sigmoid in units 2^-8, <= 256")
    XGW = 8 + GGW + MW + 1
    v(f"wire signed [{XGW - 1}:0] xgm = xh * $signed(gg) * $signed({{1'b0, mo_r}});")
    yw = rshift_round(v, "xgm", XGW, "so_r", "yq")
    _clamp8(v, "yq", yw, "y8")
    v("always @(posedge clk) begin")
    v("    if (!rst_n) begin")
    v("        st <= S_IDLE;")
    v("    end else begin")
    v("        case (st)")
    v(f"        S_IDLE: if (in_valid) begin xr <= in_x; mi_r <= in_mant_i; si_r <= in_shift_i; mo_r <= in_mant_o; so_r <= in_shift_o; ec <= {CW}'d0; st <= S_EXP; end")
    load = div.load("{1'b0, ea} + {1'b0, eb}")
    v(f"        S_EXP: begin ea_r <= ea; {load} cnt <= {CW}'d0; st <= S_DIV; end")
    v(f"        S_DIV: begin {div.step()} cnt <= cnt + {CW}'d1; if (cnt == {CW}'d{QW - 1}) st <= S_OUT; end")
    v(f"        S_OUT: begin {_push('yr', L, 8, 'y8')} {_rotate('xr', L, 8)} ec <= ec + {CW}'d1; st <= (ec == {CW}'d{L - 1}) ? S_DONE : S_EXP; end")
    return _finish(v)


def _shiftmax(cfg: VectorUnitConfig) -> str:
    L, F, IW = cfg.L, cfg.F, cfg.in_bits
    v = V()
    ports = [f"input wire [{MW - 1}:0] in_mant", f"input wire [{SHW - 1}:0] in_shift"]
    _header(cfg, v, _common_ports(cfg, ports), "Shiftmax, integer softmax over the row")
    _states(v, ["S_IDLE", "S_MAX", "S_EXP", "S_DIV", "S_OUT", "S_DONE"])
    QW = cfg.div_bits
    CW = clog2(max(L, QW) + 1)
    EW = F + 1
    SMW = (L << F).bit_length()
    v(f"reg [{CW - 1}:0] cnt;")
    v(f"reg [{L * IW - 1}:0] xr; reg [{L * EW - 1}:0] er; reg [{L * 8 - 1}:0] yr;")
    v(f"reg signed [{IW - 1}:0] mx; reg [{SMW - 1}:0] sm; reg [{MW - 1}:0] mant_r; reg [{SHW - 1}:0] sh_r;")
    v("assign in_ready = (st == S_IDLE);")
    v("assign out_valid = (st == S_DONE);")
    v("assign out_y = yr;")
    v(f"wire signed [{IW - 1}:0] xh = xr[{IW - 1}:0];")
    v(f"wire signed [{IW}:0] dl = xh - mx;  // <= 0")
    PW = IW + 1 + MW + 1
    v(f"wire signed [{PW - 1}:0] zp = dl * $signed({{1'b0, mant_r}});")
    sc = _shift_clamp(v, "sh_r", PW - 1, "sh_c")
    v(f"wire signed [{PW - 1}:0] z = zp >>> {sc};  // (x - max) S_in in units 2^-F")
    shift_exp(v, "z", PW, F, "e")
    v(f"wire [{SMW - 1}:0] sm_n = sm + e;")
    div = _Divider(v, F + vec.RECIP_EXTRA, QW, SMW)
    v(f"wire [{QW + EW - 1}:0] pr = qt * er[{EW - 1}:0];")
    v(f"wire [{QW + EW - F - vec.PROB_BITS - 1}:0] yv = pr[{QW + EW - 1}:{F + vec.PROB_BITS}];")
    v("wire [7:0] y8 = (yv > 255) ? 8'hff : yv[7:0];")
    v("always @(posedge clk) begin")
    v("    if (!rst_n) begin")
    v("        st <= S_IDLE;")
    v("    end else begin")
    v("        case (st)")
    v(f"        S_IDLE: if (in_valid) begin xr <= in_x; mant_r <= in_mant; sh_r <= in_shift; mx <= {{1'b1, {{{IW - 1}{{1'b0}}}}}}; sm <= {SMW}'d0; cnt <= {CW}'d0; st <= S_MAX; end")
    v(f"        S_MAX: begin if (xh > mx) mx <= xh; {_rotate('xr', L, IW)} cnt <= (cnt == {CW}'d{L - 1}) ? {CW}'d0 : cnt + {CW}'d1; if (cnt == {CW}'d{L - 1}) st <= S_EXP; end")
    v(f"        S_EXP: begin sm <= sm_n; {_push('er', L, EW, 'e')} {_rotate('xr', L, IW)} cnt <= cnt + {CW}'d1;")
    v(f"            if (cnt == {CW}'d{L - 1}) begin {div.load('sm_n')} cnt <= {CW}'d0; st <= S_DIV; end")
    v("        end")
    v(f"        S_DIV: begin {div.step()} cnt <= cnt + {CW}'d1; if (cnt == {CW}'d{QW - 1}) begin cnt <= {CW}'d0; st <= S_OUT; end end")
    v(f"        S_OUT: begin {_push('yr', L, 8, 'y8')} {_rotate('er', L, EW)} cnt <= cnt + {CW}'d1; if (cnt == {CW}'d{L - 1}) st <= S_DONE; end")
    return _finish(v)


def _eltwise_ports(cfg: VectorUnitConfig, ins: list[str]) -> list[str]:
    return (["input wire clk", "input wire rst_n", "input wire in_valid", "output wire in_ready"] + ins
            + ["output wire out_valid", "input wire out_ready", f"output wire [{cfg.L * cfg.out_bits - 1}:0] out_y"])


def _eltwise_open(v: V, n: int) -> int:
    """States, the handshake and the step counter of an elementwise unit of n steps a row; returns the counter width."""
    _states(v, ["S_IDLE", "S_RUN", "S_DONE"])
    CW = clog2(n + 1)
    v(f"reg [{CW - 1}:0] cnt;")
    v("assign in_ready = (st == S_IDLE);")
    v("assign out_valid = (st == S_DONE);")
    return CW


def _eltwise_fsm(v: V, load: str, step: str, n: int, CW: int) -> str:
    v("always @(posedge clk) begin")
    v("    if (!rst_n) begin")
    v("        st <= S_IDLE;")
    v("    end else begin")
    v("        case (st)")
    v(f"        S_IDLE: if (in_valid) begin {load} cnt <= {CW}'d0; st <= S_RUN; end")
    v(f"        S_RUN: begin {step} cnt <= cnt + {CW}'d1; if (cnt == {CW}'d{n - 1}) st <= S_DONE; end")
    return _finish(v)


def _requant(cfg: VectorUnitConfig) -> str:
    L, IW, OW = cfg.L, cfg.in_bits, cfg.out_bits
    v = V()
    ports = [f"input wire [{L * IW - 1}:0] in_x", f"input wire [{MW - 1}:0] in_mant", f"input wire [{SHW - 1}:0] in_shift"]
    _header(cfg, v, _eltwise_ports(cfg, ports), f"requant, clamp(rshift_round(x mant, sh)), int{IW} -> int{OW}")
    CW = _eltwise_open(v, L)
    v(f"reg [{L * IW - 1}:0] xr; reg [{L * OW - 1}:0] yr; reg [{MW - 1}:0] mant_r; reg [{SHW - 1}:0] sh_r;")
    v("assign out_y = yr;")
    v(f"wire signed [{IW - 1}:0] xh = xr[{IW - 1}:0];")
    PW = IW + MW + 1  # |x mant| < 2^(IW - 1 + 16)
    v(f"wire signed [{PW - 1}:0] p = xh * $signed({{1'b0, mant_r}});")
    yw = rshift_round(v, "p", PW, "sh_r", "yq")
    _clamp(v, "yq", yw, OW, "yo")
    return _eltwise_fsm(v, "xr <= in_x; mant_r <= in_mant; sh_r <= in_shift;", f"{_push('yr', L, OW, 'yo')} {_rotate('xr', L, IW)}", L, CW)


def _addmul(cfg: VectorUnitConfig) -> str:
    L, IW, OW, add = cfg.L, cfg.in_bits, cfg.out_bits, cfg.unit == "add"
    v = V()
    ports = [f"input wire [{L * IW - 1}:0] in_a", f"input wire [{L * IW - 1}:0] in_b"]
    ports += ([f"input wire [{MW - 1}:0] in_mant_a", f"input wire [{MW - 1}:0] in_mant_b"] if add else [f"input wire [{MW - 1}:0] in_mant"])
    ports += [f"input wire [{SHW - 1}:0] in_shift"]
    what = "add, clamp(rshift_round(a mant_a + b mant_b, sh))" if add else "mul, clamp(rshift_round(a b mant, sh))"
    _header(cfg, v, _eltwise_ports(cfg, ports), f"{what}, int{IW} -> int{OW}")
    CW = _eltwise_open(v, L)
    v(f"reg [{L * IW - 1}:0] ar, br; reg [{L * OW - 1}:0] yr; reg [{SHW - 1}:0] sh_r;")
    v(f"reg [{MW - 1}:0] ma_r, mb_r;" if add else f"reg [{MW - 1}:0] mant_r;")
    v("assign out_y = yr;")
    v(f"wire signed [{IW - 1}:0] ah = ar[{IW - 1}:0];")
    v(f"wire signed [{IW - 1}:0] bh = br[{IW - 1}:0];")
    if add:
        PW = IW + MW + 2  # two products below 2^(IW - 1 + 16) each
        v(f"wire signed [{PW - 1}:0] pa = ah * $signed({{1'b0, ma_r}});")
        v(f"wire signed [{PW - 1}:0] pb = bh * $signed({{1'b0, mb_r}});")
        v(f"wire signed [{PW - 1}:0] p = pa + pb;")
        load = "ar <= in_a; br <= in_b; ma_r <= in_mant_a; mb_r <= in_mant_b; sh_r <= in_shift;"
    else:
        v("wire signed [15:0] ab = ah * bh;  // -16256..16384")
        PW = 16 + MW + 1
        v(f"wire signed [{PW - 1}:0] p = ab * $signed({{1'b0, mant_r}});")
        load = "ar <= in_a; br <= in_b; mant_r <= in_mant; sh_r <= in_shift;"
    yw = rshift_round(v, "p", PW, "sh_r", "yq")
    _clamp(v, "yq", yw, OW, "yo")
    step = f"{_push('yr', L, OW, 'yo')} {_rotate('ar', L, IW)} {_rotate('br', L, IW)}"
    return _eltwise_fsm(v, load, step, L, CW)


def _rope(cfg: VectorUnitConfig) -> str:
    L, IW, OW = cfg.L, cfg.in_bits, cfg.out_bits
    h = L // 2
    TB = 16  # table entries: int16 at 2^-14
    v = V()
    ports = [f"input wire [{L * IW - 1}:0] in_x", f"input wire [{h * TB - 1}:0] in_c", f"input wire [{h * TB - 1}:0] in_s",
             f"input wire [{MW - 1}:0] in_mant", f"input wire [{SHW - 1}:0] in_shift"]
    _header(cfg, v, _eltwise_ports(cfg, ports), f"rotate-half RoPE, one pair (x_j, x_j+{h}) a step, int{IW} -> int{OW}")
    CW = _eltwise_open(v, h)
    # the two halves rotate side by side, so the heads are x_j and x_{j+h}; the outputs fill two half rows
    v(f"reg [{h * IW - 1}:0] xl, xu; reg [{h * TB - 1}:0] cr, sr; reg [{h * OW - 1}:0] yl, yu;")
    v(f"reg [{MW - 1}:0] mant_r; reg [{SHW - 1}:0] sh_r;")
    v("assign out_y = {yu, yl};")
    v(f"wire signed [{IW - 1}:0] xlh = xl[{IW - 1}:0];")
    v(f"wire signed [{IW - 1}:0] xuh = xu[{IW - 1}:0];")
    v(f"wire signed [{TB - 1}:0] ch = cr[{TB - 1}:0];")
    v(f"wire signed [{TB - 1}:0] sh_t = sr[{TB - 1}:0];")
    TW = IW + vec.ROPE_TABLE_BITS + 2  # |x c - x' s| <= 2^(IW - 1 + 14 + 1)
    v(f"wire signed [{TW - 1}:0] t0 = xlh * ch - xuh * sh_t;")
    v(f"wire signed [{TW - 1}:0] t1 = xuh * ch + xlh * sh_t;")
    PW = TW + MW + 1
    v(f"wire signed [{PW - 1}:0] p0 = t0 * $signed({{1'b0, mant_r}});")
    v(f"wire signed [{PW - 1}:0] p1 = t1 * $signed({{1'b0, mant_r}});")
    yw = rshift_round(v, "p0", PW, "sh_r", "yq0")
    rshift_round(v, "p1", PW, "sh_r", "yq1")
    _clamp(v, "yq0", yw, OW, "yo0")
    _clamp(v, "yq1", yw, OW, "yo1")
    load = f"xl <= in_x[{h * IW - 1}:0]; xu <= in_x[{L * IW - 1}:{h * IW}]; cr <= in_c; sr <= in_s; mant_r <= in_mant; sh_r <= in_shift;"
    step = " ".join(x for x in (_push("yl", h, OW, "yo0"), _push("yu", h, OW, "yo1"), _rotate("xl", h, IW), _rotate("xu", h, IW),
                                _rotate("cr", h, TB), _rotate("sr", h, TB)) if x)
    return _eltwise_fsm(v, load, step, h, CW)


def generate(cfg: VectorUnitConfig) -> str:
    """Verilog text of the vector unit `cfg` describes."""
    if cfg.norm:
        return _norm(cfg)
    if cfg.unit == "shiftmax":
        return _shiftmax(cfg)
    if cfg.unit == "requant":
        return _requant(cfg)
    if cfg.unit in ("add", "mul"):
        return _addmul(cfg)
    if cfg.unit == "rope":
        return _rope(cfg)
    return _gate(cfg)

