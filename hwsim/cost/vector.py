"""Cycles, energy and area of the vector unit's commands (VEC_*) and of the attention matmuls (QK^T, PV).

The vector unit (docs/hwsim/vector_unit.md) is `lanes` copies of the one-lane units of rtl/gen/vector_unit.py,
sized by the design record: lanes = the design's default epilogue lanes (`Design.default_array["lanes"]`:
16 for lut-tc, 8 for mixpe and mac). The rows of a command are dealt round-robin to the lanes, each lane
running the RTL's schedule (hwsim.arrays.vector_unit.rows_cycles: cycle-exact to the RTL for one lane);
commands run one after another, and not overlapped with the arrays.

    VEC_NORM     rows x passes rows of L values on the norm unit (rmsnorm / layernorm)
    VEC_GATE     rows x ceil(width / GATE_ROW) x passes rows of GATE_ROW values on the gate unit (elementwise:
                 the unit as built and measured, L = 8)
    VEC_SOFTMAX  heads x S rows of T int32 scores on the Shiftmax unit
    VEC_QK       QK^T on the array (below)
    VEC_PV       PV on the array, then its rescale (op "REQUANT"): passes x heads x S rows of D int32 accumulators
                 on the requant unit (int32 in, int8 out), each row cut into ceil(D / GATE_ROW) rows of GATE_ROW
    VEC_ADD      rows x ceil(L / GATE_ROW) x passes rows of GATE_ROW values on the add unit (in_bits, out_bits: the
                 residual stream at 32, 32)
    VEC_MUL      rows x ceil(L / GATE_ROW) x passes rows of GATE_ROW values on the mul unit (as VEC_GATE)
    VEC_ROPE     rows (tokens x heads) x passes rows of L = head_dim values on the rope unit (int16 in; it pairs
                 x_j with x_(j + L/2), so a row is not cut)
    VEC_KV       rows (tokens x kv heads) x ceil(head_dim / GATE_ROW) rows of GATE_ROW values on the requant unit
                 (int8 or int16 in, int8 out)
An elementwise row (requant, add, mul, the gates) is cut into rows of the unit as built (L = GATE_ROW), all at
the row's one dyadic pair: the same integers, and the cycles and energy of the module synthesized.

Rows longer than the generator's 1024 (a norm over a 2048-wide stream, Shiftmax over a long context) are timed
with the same phases (the formula, not a generated module).

Attention matmuls run on the array, not on a unit of their own: each is an int8 x int8 product cut into two
4-bit passes the arrays already run, exactly. The "weight" operand is a K row (QK^T: offset-binary code
k + 128 = 16 h + l, zero point 128 as 16 (h - 8) + l) or a row of Shiftmax's uint8 probabilities (PV, zero 0);
the high pass has codes h with zero 8, the low pass codes l with zero 0, and the epilogue's dyadic pair is
(2^(MW-1), MW-1 - 4) for the high pass and (2^(MW-1), MW-1) for the low one, so Y = 16 acc_h + acc_l is the
exact int32 accumulator (the second pass STOREs with accumulate). The activations are the other operand at int8:
QK^T Q rows (M = S, N = T, K = D), PV the V^T rows (M = D, N = S, K = T: the uint8 probabilities do not fit the
arrays' int8 activations, so they are the weights). So on every design an attention matmul costs two W4 layers
of its shape, one group spanning the whole reduction (padded to the array's K): lut-tc 2 x 4 bit-serial planes,
mixpe and mac two passes of their W4 beat. The K / V rows come from DRAM as the weight stream (one byte per
value); the accumulators stay in the output SRAM for the vector unit (no output DRAM energy), while the cycles are
the layer model's as they stand (its output drain included: an upper bound). The QK^T accumulators go to Shiftmax
unrounded (int32 in); PV's are rescaled to int8 per head and row on the requant unit (rtl/gen/vector_unit.py).

Energy: per row, the arithmetic and register writes of the RTL's phases (`row_events`: multiplies, adds and the
rotating row registers' bit writes, widths from hwsim.vector.NormShape and the generator), priced by
hwsim.cost.energy's per-op figures. An op count from the RTL's structure, not a gate-level power analysis.

Area: `unit_area` from the yosys figures of docs/hwsim/vector_unit.md (yosys 0.23 `synth -flatten`, run once
by hand at L = 8; AREA_L8 below): the logic is taken as independent of L (the datapath sees one element per
step), the row registers grow by row_ff_bits per value. Logic transistors -> um^2 at the committed lut-tc W4A8
report's um^2 per transistor; flip-flops at the NanGate DFF + enable mux (hwsim.cost.area). `vector_area` takes the
elementwise units at L = 8 (rope at head_dim), as the commands are timed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.errors import LowbitError
from hwsim import vector as vec
from hwsim.arrays.vector_unit import EPS_PORT, GATE_DIV_BITS, OUT_BITS, UNITS, rows_cycles
from hwsim.cost import energy as en

GATE_ROW = 8  # values per row of the gate and mul units (elementwise; the built and synthesized L)

# (unit, in_bits) -> (cells, flip-flop bits, transistors) at L = 8, F = 8: docs/hwsim/vector_unit.md's table
AREA_L8 = {
    ("rmsnorm", 8): (7682, 376, 67714),
    ("layernorm", 8): (9865, 488, 86530),
    ("silu", 8): (6686, 233, 56436),
    ("gelu", 8): (7063, 233, 59370),
    ("shiftmax", 8): (2996, 294, 29304),
    ("shiftmax", 32): (6415, 510, 61234),
    ("rmsnorm", 16): (10828, 488, 94570),  # int16 inputs, a 32-bit eps port (--vector-unit norm16)
    ("layernorm", 16): (13380, 672, 117644),
    # the elementwise units (docs/hwsim/vector_unit.md, "Elementwise units: RTL and cycles"); requant and add
    # keyed by their output width too
    ("requant", 32, 8): (5158, 349, 48630),  # PV's rescale
    ("requant", 16, 8): (2713, 221, 26186),  # the KV cache write of v
    ("requant", 8, 8): (1593, 157, 15804),  # and of k (the rope unit's int8 output)
    ("requant", 32, 16): (5196, 413, 50362),
    ("add", 32, 32): (9302, 813, 92400),  # the residual adds (the stream at int32)
    ("add", 16, 16): (4814, 429, 47524),
    ("add", 8, 8): (2642, 237, 25916),
    ("mul", 8): (3160, 221, 29320),  # SwiGLU's product
    ("rope", 16): (17132, 348, 142714),
    ("rope", 8): (11012, 284, 93086),
}
AREA_SOURCE = "yosys 0.23 synth -flatten at L=8 (by hand, docs/hwsim/vector_unit.md); row registers scaled to L"
FF_T = 16 + 12  # rtl/synth.py: a D flip-flop with enable
REF_REPORT = "lut-tc_w4a8g128.json"  # the array report whose um^2 per logic transistor converts the units


def _out_bits(unit: str, out_bits: int | None) -> int:
    return out_bits if out_bits is not None else OUT_BITS.get(unit, (8,))[0]


def _area_key(unit: str, in_bits: int, out_bits: int | None) -> tuple:
    return (unit, in_bits, _out_bits(unit, out_bits)) if unit in OUT_BITS else (unit, in_bits)


def row_ff_bits(unit: str, in_bits: int = 8, out_bits: int | None = None) -> int:
    """Flip-flop bits per row value of the unit's row registers (rtl/gen/vector_unit.py)."""
    ow = _out_bits(unit, out_bits)
    if unit == "requant":
        return in_bits + ow  # xr, yr
    if unit == "add":
        return 2 * in_bits + ow  # ar, br, yr
    if unit == "mul":
        return 3 * 8
    if unit == "rope":
        return in_bits + 16 + 8  # xl / xu, the cos and sin tables (one entry of each per pair), yl / yu
    if unit == "rmsnorm":
        return in_bits + 2 * 8  # xr, gr, yr
    if unit == "layernorm":
        return in_bits + 2 * 8 + (8 if in_bits == 8 else 16)  # and br (int16 inputs: a 16-bit bias)
    if unit in vec.GATES:
        return 2 * 8  # xr, yr
    if unit == "shiftmax":
        return in_bits + (vec.F_BITS + 1) + 8  # xr, er, yr
    raise LowbitError(f"unknown vector unit '{unit}'", f"use one of {', '.join(UNITS)}")


def _logic_um2_per_transistor() -> float:
    from hwsim.cost import area

    r = next((r for r in area.load_reports() if r["path"].endswith(REF_REPORT)), None)
    if r is None:
        raise LowbitError(f"the synthesis report {REF_REPORT} is missing", "restore rtl/reports/synth from the repository")
    return area.cells_area_um2(r["cells"], "45nm")["logic_um2"] / r["transistors_yosys"]


def unit_area(unit: str, L: int, in_bits: int = 8, node: str = "28nm", out_bits: int | None = None) -> dict:
    """One lane of one unit over rows of L values: transistors, flip-flop bits, um^2 (logic, flip-flops, total).
    out_bits: requant's and add's output width (None: the unit's default, 8 and 16)."""
    from hwsim.cost import area

    key = _area_key(unit, in_bits, out_bits)
    if key not in AREA_L8:
        outs = f", int{key[2]} outputs" if len(key) > 2 else ""
        raise LowbitError(f"no synthesis figures for the {unit} unit with int{in_bits} inputs{outs}",
                          f"use one of the widths measured: {', '.join(str(k) for k in AREA_L8)}")
    _, ff8, t8 = AREA_L8[key]
    ff = ff8 + (L - 8) * row_ff_bits(unit, in_bits, out_bits)
    logic_t = t8 - ff8 * FF_T
    s = area.node_area_scale(node)
    logic = logic_t * _logic_um2_per_transistor() * s
    ffa = ff * area.ff_cell_um2("$_DFFE_PP_") * s
    return {"unit": unit, "L": L, "in_bits": in_bits, **({"out_bits": key[2]} if len(key) > 2 else {}), "transistors": logic_t + ff * FF_T, "ff_bits": ff, "logic_um2": logic, "ff_um2": ffa,
            "total_um2": logic + ffa, "source": AREA_SOURCE}


# ----------------------------------------------------------------------------------------------------
# The vector unit of a design


@dataclass(frozen=True)
class VectorUnit:
    lanes: int
    norm: str = "rmsnorm"  # the norm unit each lane has (the model's)
    gate: str = "silu"
    norm_bits: int = 8  # its input width (--vector-unit norm16: 16)

    def __post_init__(self):
        if self.lanes < 1:
            raise LowbitError(f"vector unit lanes={self.lanes}", "give lanes >= 1")


def design_lanes(design: str) -> int:
    """The vector unit's lanes of a design: its record's default epilogue lanes."""
    from hwsim.designs import DESIGNS

    return int(DESIGNS[design].default_array.get("lanes", 1))


def vector_area(vu: VectorUnit, L_norm: int, L_softmax: int, node: str = "28nm", L_head: int | None = None) -> dict:
    """The whole unit: lanes x (norm over L_norm, gate over GATE_ROW, int32 Shiftmax over L_softmax, and the
    elementwise units at GATE_ROW: requant int32 -> int8 (PV's rescale), int16 -> int8 and int8 -> int8 (the KV
    cache writes of v and k) when L_head is given, add int16 -> int16, mul when the gate is SiLU (SwiGLU); rope
    int16 over L_head when given). Returns totals in mm^2 and transistors, and the per-unit rows."""
    parts = [unit_area(vu.norm, L_norm, vu.norm_bits, node), unit_area(vu.gate, GATE_ROW, 8, node), unit_area("shiftmax", L_softmax, 32, node),
             unit_area("requant", GATE_ROW, 32, node, 8), unit_area("add", GATE_ROW, 32, node, 32)]
    if vu.gate == "silu":
        parts.append(unit_area("mul", GATE_ROW, 8, node))
    if L_head is not None:
        parts += [unit_area("requant", GATE_ROW, 16, node, 8), unit_area("requant", GATE_ROW, 8, node, 8), unit_area("rope", L_head, 16, node)]
    tot = {k: vu.lanes * sum(p[k] for p in parts) for k in ("transistors", "ff_bits", "logic_um2", "ff_um2", "total_um2")}
    return {"lanes": vu.lanes, "units": parts, **tot, "total_mm2": tot["total_um2"] / 1e6, "source": AREA_SOURCE}


# ----------------------------------------------------------------------------------------------------
# Events and energy of one row


def _add(ev: dict, w: int, n: int) -> None:
    ev["adds"][w] = ev["adds"].get(w, 0) + n


def _mult(ev: dict, a: int, b: int, n: int) -> None:
    ev["mults"][(a, b)] = ev["mults"].get((a, b), 0) + n


def row_events(unit: str, L: int, in_bits: int = 8, eps_max: int | None = None, out_bits: int | None = None) -> dict:
    """Datapath events of one row of L values on the one-lane unit, phase by phase as the RTL runs them:
    {"adds": {width: count}, "mults": {(a, b): count}, "reg_bit_writes": n}. The row registers rotate one
    value a step, so each step of a scanning phase rewrites them whole (L x their bits per value)."""
    ev = {"adds": {}, "mults": {}, "reg_bit_writes": 0}
    F = vec.F_BITS
    MW = vec.MANT_BITS
    if unit in vec.ELTWISE:  # one step a value (rope: a pair): multiplies, the rounding add, the row registers
        if unit == "requant":
            _mult(ev, in_bits, MW, L)  # x mant
            _add(ev, in_bits + MW + 2, L)  # + the half, before the shift
        elif unit == "add":
            _mult(ev, in_bits, MW, 2 * L)  # a mant_a, b mant_b
            _add(ev, in_bits + MW + 2, 2 * L)  # their sum, the rounding
        elif unit == "mul":
            _mult(ev, 8, 8, L)  # a b
            _mult(ev, 16, MW, L)  # (a b) mant
            _add(ev, 16 + MW + 2, L)
        else:
            if L % 2:
                raise LowbitError(f"rope rows of L={L} values", "give an even L (head_dim)")
            tw = in_bits + vec.ROPE_TABLE_BITS + 2
            _mult(ev, in_bits, 16, 2 * L)  # per pair: x_j c, x_j+h s, x_j+h c, x_j s
            _add(ev, tw, L)  # the two rotations
            _mult(ev, tw, MW, L)  # each times mant
            _add(ev, tw + MW + 2, L)  # and rounded
        steps = L // 2 if unit == "rope" else L
        ev["reg_bit_writes"] += steps * L * row_ff_bits(unit, in_bits, out_bits)  # every row register moves each step
        return ev
    if unit in vec.NORMS:
        ns = vec.NormShape(unit, L, EPS_PORT[in_bits] if eps_max is None else eps_max, in_bits)
        xrow, row = in_bits * L, 8 * L
        if unit == "layernorm":  # S_SUM: the row sum, x rotating
            sxw = vec.bits_signed(-(1 << (in_bits - 1)) * L, (1 << (in_bits - 1)) * L)
            _add(ev, sxw, L)
            ev["reg_bit_writes"] += L * (xrow + sxw)
            _add(ev, ns.d_bits, L)  # d = L x - sum, formed again in S_SQ and S_OUT (a constant multiply: an add)
        _mult(ev, ns.d_bits, ns.d_bits, L)  # S_SQ: d^2 into ss
        _add(ev, ns.ss_bits, L + 1)  # and eps
        ev["reg_bit_writes"] += L * (xrow + ns.ss_bits)
        rmw = ns.root_bits + 3
        _add(ev, rmw, 2 * ns.root_bits)  # S_SQRT: the trial compare and subtract
        ev["reg_bit_writes"] += ns.root_bits * (rmw + ns.root_bits + ns.tw)
        _add(ev, ns.rb + 1, ns.recip_bits)  # S_DIV: one subtract per quotient bit
        ev["reg_bit_writes"] += ns.recip_bits * (ns.rb + 1 + ns.recip_bits)
        pdw = ns.d_bits + ns.recip_bits + 1
        agw = ns.a_bits + 8 + vec.MANT_BITS + 1
        _mult(ev, ns.d_bits, ns.recip_bits + 1, L)  # S_OUT: d r, a g mant, two roundings (and LayerNorm's bias)
        _mult(ev, ns.a_bits, 8, L)
        _mult(ev, ns.a_bits + 8, vec.MANT_BITS, L)
        _add(ev, pdw + 1, L)
        _add(ev, agw + 1, L)
        if unit == "layernorm":
            _add(ev, ns.d_bits, L)
            _add(ev, 8, L)
        ev["reg_bit_writes"] += L * (xrow + row * (3 if unit == "layernorm" else 2))  # y pushed, x g (b) rotating
        return ev
    if unit in vec.GATES:  # per value: exponentials, the 17-step divide, the output; x and y rotate once a value
        zw = F + 6
        _mult(ev, 8, vec.MANT_BITS, L)  # u = x mant_i
        if unit == "gelu":
            _add(ev, zw, 3 * L)
        _add(ev, zw + 2, 2 * 3 * L)  # two shift exponentials (p = z + z/2 - z/16; 1 + r/2)
        _add(ev, F + 2, L)  # ea + eb
        _add(ev, F + vec.RECIP_EXTRA + 2, GATE_DIV_BITS * L)
        ev["reg_bit_writes"] += L * GATE_DIV_BITS * (2 * (F + vec.RECIP_EXTRA + 2) + GATE_DIV_BITS)
        _mult(ev, GATE_DIV_BITS, F + 1, L)  # g = r ea
        _mult(ev, 8, 9, L)  # x g
        _mult(ev, 17, vec.MANT_BITS, L)  # (x g) mant_o
        _add(ev, 34, L)  # its rounding
        ev["reg_bit_writes"] += L * (2 * 8 * L + (F + 1))
        return ev
    if unit == "shiftmax":
        ew = F + 1
        smw = (L * (1 << F)).bit_length() + 1
        _add(ev, in_bits + 1, L)  # S_MAX: compare
        ev["reg_bit_writes"] += L * (in_bits * L + in_bits)
        _add(ev, in_bits + 1, L)  # S_EXP: x - max, its scale, the exponential, the sum
        _mult(ev, in_bits + 1, vec.MANT_BITS, L)
        _add(ev, F + 8, 3 * L)
        _add(ev, smw, L)
        ev["reg_bit_writes"] += L * (in_bits * L + ew * L + smw)
        _add(ev, F + vec.RECIP_EXTRA + 2, GATE_DIV_BITS)  # the one divide
        ev["reg_bit_writes"] += GATE_DIV_BITS * (2 * (F + vec.RECIP_EXTRA + 2) + GATE_DIV_BITS)
        _mult(ev, GATE_DIV_BITS, ew, L)  # S_OUT: r e
        ev["reg_bit_writes"] += L * (8 * L + ew * L)
        return ev
    raise LowbitError(f"unknown vector unit '{unit}'", f"use one of {', '.join(UNITS)}")


def events_energy_pj(ev: dict, node: str = "28nm") -> float:
    """hwsim.cost.energy's datapath pricing (a fixed and a per-bit part per add and multiply; a register bit
    write = one adder bit) of an events dict."""
    s = en.node_scale(node)
    add_fixed = en.ADD8_PJ - 8 * en.add_bit_pj()
    mult_fixed = en.MULT8_PJ - 64 * en.mult_bit2_pj()
    adds = sum(c * (add_fixed + w * en.add_bit_pj()) for w, c in ev["adds"].items())
    mults = sum(c * (mult_fixed + a * b * en.mult_bit2_pj()) for (a, b), c in ev["mults"].items())
    return s * (adds + mults + ev["reg_bit_writes"] * en.add_bit_pj())


def row_energy_pj(unit: str, L: int, in_bits: int = 8, node: str = "28nm", out_bits: int | None = None) -> float:
    return events_energy_pj(row_events(unit, L, in_bits, out_bits=out_bits), node)


# ----------------------------------------------------------------------------------------------------
# Commands


def attn_array_config(cfg, reduction: int):
    """The W4 ArrayConfig one pass of an attention matmul runs with: cfg's array, int8 activations, integer
    codes, one group over the reduction padded to the array's K."""
    kp = -(-reduction // cfg.K) * cfg.K
    return cfg.with_(bits=4, ternary=False, act="a8", group=kp, weight_format="int"), kp


def attn_matmul_cost(cfg, heads: int, M: int, N: int, K: int, memory=None, node: str = "28nm") -> dict:
    """Two W4 passes per head of an [M, K] x [K, N] int8 product on the array `cfg` (module docstring):
    cycles (with the memory model's stalls), energy pJ, MACs."""
    from hwsim.arrays import simulate_shape
    from hwsim.cost.energy import layer_energy_pj

    acfg, kp = attn_array_config(cfg, K)
    r = simulate_shape(acfg, M, N, kp, memory)
    act = dict(r.activity)  # the accumulators stay on chip for the vector unit: no output DRAM traffic
    act["dram_bytes"] -= act["dram_bytes_outputs"]
    act["dram_bytes_outputs"] = 0
    e = layer_energy_pj(acfg, act, node, memory)["total"]
    return {"cycles": 2 * heads * r.cycles, "energy_pj": 2 * heads * e, "macs": heads * M * N * K}


def command_costs(shape: dict, vu: VectorUnit, cfg, memory=None, node: str = "28nm") -> list[dict]:
    """The cost of one VEC_* command, from the shape VectorRunner logs (or `block_shapes` makes): rows of
    {"part": "vector" | "attn_matmul", "op", "cycles", "energy_pj"}."""
    op = shape["op"]
    lanes = vu.lanes

    def unit(u, L, rows, in_bits=8, out_bits=None, name=op):
        cyc = rows_cycles(u, L, rows, lanes, EPS_PORT[in_bits], in_bits) if u in vec.NORMS else rows_cycles(u, L, rows, lanes)
        return {"part": "vector", "op": name, "cycles": cyc, "energy_pj": rows * row_energy_pj(u, L, in_bits, node, out_bits)}

    if op == "VEC_NORM":
        return [unit(shape["kind"], shape["L"], shape["rows"] * shape["passes"], shape.get("in_bits", 8))]
    if op == "VEC_GATE":
        return [unit(shape["kind"], GATE_ROW, shape["rows"] * math.ceil(shape["width"] / GATE_ROW) * shape["passes"])]
    if op == "VEC_SOFTMAX":
        return [unit("shiftmax", shape["T"], shape["heads"] * shape["S"], shape["in_bits"])]
    def pieces(L):  # an elementwise row cut into rows of the built unit's GATE_ROW values, all at the row's one pair
        return math.ceil(L / GATE_ROW)

    if op == "VEC_ADD":
        return [unit("add", GATE_ROW, shape["rows"] * pieces(shape["L"]) * shape["passes"], shape.get("in_bits", 32), shape.get("out_bits", 32))]
    if op == "VEC_MUL":
        return [unit("mul", GATE_ROW, shape["rows"] * pieces(shape["L"]) * shape["passes"])]
    if op == "VEC_ROPE":
        return [unit("rope", shape["L"], shape["rows"] * shape["passes"], shape.get("in_bits", 16))]
    if op == "VEC_KV":
        return [unit("requant", GATE_ROW, shape["rows"] * pieces(shape["L"]), shape["in_bits"], 8)]
    H, S, T, D = shape["heads"], shape["S"], shape["T"], shape["D"]
    if op == "VEC_QK":
        return [{"part": "attn_matmul", "op": op, **attn_matmul_cost(cfg, H, S, T, D, memory, node)}]
    if op == "VEC_PV":  # the matmul, then its rows of D int32 accumulators rescaled to int8 (op REQUANT)
        mm = {"part": "attn_matmul", "op": op, **attn_matmul_cost(cfg, H, D, S, T, memory, node)}
        return [mm, unit("requant", GATE_ROW, shape["passes"] * H * S * pieces(D), 32, 8, "REQUANT")]
    raise ValueError(f"unknown vector command {op}")


PARTS = ("linears", "attn_matmul", "vector")


def total_costs(shapes: list[dict], vu: VectorUnit, cfg, memory=None, node: str = "28nm") -> dict:
    """{part: {"cycles", "energy_pj"}} over the commands' shapes, and per command op under "ops"."""
    out = {p: {"cycles": 0, "energy_pj": 0.0} for p in ("attn_matmul", "vector")}
    ops: dict[str, dict] = {}
    for sh in shapes:
        for c in command_costs(sh, vu, cfg, memory, node):
            for d in (out[c["part"]], ops.setdefault(c["op"], {"calls": 0, "cycles": 0, "energy_pj": 0.0})):
                d["cycles"] += int(c["cycles"])
                d["energy_pj"] += float(c["energy_pj"])
            ops[c["op"]]["calls"] += 1
    out["ops"] = ops
    return out


def block_shapes(block: dict, S: int, T: int) -> list[dict]:
    """The VEC_* command shapes of one transformer block over S query rows and T key rows (block: hidden,
    heads, kv_heads, head_dim, inter, norm, gate, causal, as hwsim.cost.roofline.block_of gives): two norms,
    the two residual adds, QK^T, Shiftmax, PV, the gate, each as `lowbit compile --vector-unit all` emits them;
    a decoder block (causal: llama's) also rope on q and k and the KV cache writes of k (rope's int8 output)
    and v (int16); a SiLU gate is llama's SwiGLU, with its product on the mul unit (block_of has no other
    flag for a gated FFN)."""
    H, D, KV = block["heads"], block["head_dim"], block.get("kv_heads", block["heads"])
    norm = {"op": "VEC_NORM", "kind": block["norm"], "L": block["hidden"], "rows": S, "passes": 2}
    add = {"op": "VEC_ADD", "rows": S, "L": block["hidden"], "passes": 2, "in_bits": 32, "out_bits": 32}
    out = [norm, dict(norm), add, dict(add)]
    if block.get("causal"):
        out += [{"op": "VEC_ROPE", "rows": S * H, "L": D, "passes": 2, "in_bits": 16},
                {"op": "VEC_ROPE", "rows": S * KV, "L": D, "passes": 1, "in_bits": 16},  # K: one pass, at the cache's scale
                {"op": "VEC_KV", "rows": S * KV, "L": D, "in_bits": 8},
                {"op": "VEC_KV", "rows": S * KV, "L": D, "in_bits": 16}]
    out += [{"op": "VEC_QK", "heads": H, "S": S, "T": T, "D": D},
            {"op": "VEC_SOFTMAX", "heads": H, "S": S, "T": T, "in_bits": 32},
            {"op": "VEC_PV", "heads": H, "S": S, "T": T, "D": D, "passes": 2},
            {"op": "VEC_GATE", "kind": block["gate"], "rows": S, "width": block["inter"], "passes": 2}]
    if block["gate"] == "silu":
        out.append({"op": "VEC_MUL", "rows": S, "L": block["inter"], "passes": 2})
    return out
