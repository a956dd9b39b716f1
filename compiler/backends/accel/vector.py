"""The vector unit's share of a transformer block (`--vector-unit UNITS`): norms, the GELU / SiLU gates,
attention (QK^T, Shiftmax, PV), the residual adds, SwiGLU's product, RoPE and the KV cache writes lowered to
vector-unit commands and run with hwsim.vector's integer golden models, bit for bit (README.md in this folder:
the commands; docs/hwsim/vector_unit.md: accuracy).

Scales. int8 tensors the unit reads from the host are quantized per row (token) at run time, QUANT_ACT's
rule (golden.quantize_a8), as the arrays' A8 activations are: the norm inputs (a residual stream whose
outlier channels reach 2e4 on a few of SmolLM2's tokens; the norm's result depends on the scale only through
eps_int, formed per row), the gate inputs and Q. K and V, which a decode step reads from the cache, have
static per-tensor scales, max |x| / 127 over a calibration run of the quantized graph on `ref` (the
compile's calibration text, compiler.quant.calib). Outputs leave per row too: a first pass at a calibrated
(norms, PV) or bounding (gates) scale gives the row's largest code m, a second pass writes the row at
(m + 1) / 127 of that scale. Every per-row dyadic pair is made by the host once the row's scale is known
(`row_pairs`). The unit's int8 outputs go straight to the arrays (QUANT_ACT `from_vector`) and its codes to the
next unit (`VectorRunner.operand`: Q from RoPE to QK^T, K from RoPE to the cache write, the gate to SwiGLU's
product); what the unit reads from the arrays' float outputs (SCALE_OUT) or from host ops is handed over per row:
int8 by A8's rule, int16 (the residual stream, RoPE's and the V cache write's inputs) by the same rule at 32767. The
KV cache holds int8 codes at its static scale. Measured errors: docs/hwsim/vector_unit.md.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.errors import LowbitError
from hwsim import golden
from hwsim import vector as vu
from hwsim.arrays import vector_unit as vcfg
from hwsim.arrays.vector_unit import VectorUnitConfig

from compiler.backends.accel.program import Command

UNITS = ("norm", "gate", "attn", "add", "mul", "rope", "kv")  # the graph ops each unit takes
UNIT_OPS = {"norm": ("layernorm", "rmsnorm"), "gate": ("gelu", "silu"), "attn": ("attention", "cache_attention"),
            "add": ("add",), "mul": ("mul",), "rope": ("rope",), "kv": ("kv_write",)}
ADD_BITS = 32  # the residual stream (I-BERT's int32): at int16 per row, SmolLM2's outlier tokens cost 0.9% perplexity
CODE_BITS = {"add": ADD_BITS}  # units whose output codes are wider than int8 (the arrays' A8 takes int8 codes only)
STREAM_BITS = 16  # the rope and KV inputs handed over by the host
QUANT_CACHE_OPS = ("cache_attention_q", "window_attention", "kv_write_q", "kv_write_kc")
WIDE = {"norm16": "norm"}  # a unit with wider inputs: the norm taking its residual stream at int16
MASKED = -(1 << 31)  # int32 minimum: a masked score, whose shift exponential is 0
PASS_THROUGH = ("reshape",)  # host ops that keep a tensor's int8 codes (a view)
EXP_F = vu.F_BITS  # fraction bits of the shift exponential (Shiftmax, the gates): the unit as built (rtl/gen/vector_unit.py's f8)
EPS_PORT = VectorUnitConfig.eps_max  # the largest eps_int the int8 norm unit takes (EPS_PORTS[16] the int16 one's)
EPS_PORTS = vcfg.EPS_PORT


def parse_units(text: str | None) -> tuple[str, ...]:
    """`all` or a comma list of norm (or norm16: int16 inputs), gate, attn, `all,norm16` the three with norm16 ->
    the units, in UNITS order; () for None."""
    if text is None:
        return ()
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if "all" in names:
        names = [n for n in names if n != "all"] + [u for u in UNITS if not any(WIDE.get(n) == u for n in names)]
    bad = [n for n in names if n not in UNITS and n not in WIDE]
    if bad or not names:
        raise LowbitError(f"--vector-unit {text!r}: unknown unit(s) {', '.join(bad) or repr(text)}", f"give all or a comma list of {', '.join(UNITS)} (norm16: the norm at int16 inputs)")
    if "norm" in names and "norm16" in names:
        raise LowbitError(f"--vector-unit {text!r} names both norm and norm16", "give one of them")
    return tuple(w for u in UNITS for w in (u, *(k for k, b in WIDE.items() if b == u)) if w in names)


def unit_of(u: str) -> str:
    """The unit of UNITS a (possibly wide) unit name is."""
    return WIDE.get(u, u)


def vector_nodes(graph, units) -> dict[int, str]:
    """Graph node index -> unit, for every node one of `units` runs (the embedding's norm and the final norm
    before the head included)."""
    ops = {op: u for u in units for op in UNIT_OPS[unit_of(u)]}
    out = {}
    for i, nd in enumerate(graph.nodes):
        if nd.op in ops:
            out[i] = ops[nd.op]
        elif nd.op in QUANT_CACHE_OPS and ("attn" in units or "kv" in units):
            which = "attn" if "attn" in units else "kv"
            raise LowbitError(f"--vector-unit {which} keeps the KV cache as int8 codes at a static scale, and node {nd.outputs[0]} uses a quantized cache (--kv)",
                              f"compile with --kv fp16 (or f32), or drop {which} from --vector-unit")
    return out


def calibrate(graph, feeds: list[dict], nodes: dict[int, str]) -> dict[str, float]:
    """max |x| over the calibration feeds of every tensor the unit needs a static scale for (ref semantics)."""
    from compiler.reference import Interpreter

    amax: dict[str, float] = {}

    def see(name, x):
        amax[name] = max(amax.get(name, 0.0), float(np.abs(np.asarray(x, np.float64)).max()) if np.size(x) else 0.0)

    def after(i, node, ins, outs):
        u = nodes.get(i)
        if u is not None:
            see(node.outputs[0], outs[0])
            if u == "kv":  # the rows written: the cache's static scale (VEC_QK / VEC_PV read it back)
                see(node.outputs[0], ins[1])
            if u == "attn":
                t = int(np.asarray(ins[3]).max()) + 1 if node.op == "cache_attention" else None
                for v, x in zip(node.inputs[:3], ins[:3]):
                    see(v, x if t is None or v == node.inputs[0] else x[:t])
        return outs

    interp = Interpreter(graph)
    keep = set(graph.outputs)
    for f in feeds:
        env = interp.start(f)
        interp.run_nodes(env, range(len(graph.nodes)), keep=keep, after_node=after)
    return amax


def _scale(amax: dict, name: str) -> float:
    a = amax.get(name, 0.0)
    return a / 127.0 if a > 0 else 1.0


def lower_vector(graph, nodes: dict[int, str], amax: dict[str, float], tensors: dict) -> dict[int, list[Command]]:
    """The vector-unit commands of each node in `nodes` (graph index -> commands); norm gains go into `tensors`
    as int8 (<out>.vg), LayerNorm's beta as float32 (<out>.vb: rounded to each row's output scale). The commands
    and their arguments: README.md in this folder."""
    out = {}
    readers: dict[str, list[int]] = {}
    for j, nd in enumerate(graph.nodes):
        for v in nd.inputs:
            readers.setdefault(v, []).append(j)
    for i, u in nodes.items():
        nd = graph.nodes[i]
        name = nd.outputs[0]
        if unit_of(u) == "norm":
            gamma = np.asarray(graph.consts[nd.inputs[1]], np.float64)
            L = int(gamma.shape[-1])
            gm = float(np.abs(gamma).max())
            s_g = gm / 127 if gm > 0 else 1.0
            s_out = _scale(amax, name)
            tensors[f"{name}.vg"] = np.clip(np.rint(gamma / s_g), -127, 127).astype(np.int8)
            bias = None
            if nd.op == "layernorm":  # float32: each row's int8 bias is rint(beta / the row's output scale)
                bias = f"{name}.vb"
                tensors[bias] = np.asarray(graph.consts[nd.inputs[2]], np.float32)
            mo, so = vu.norm_scales(L, s_g, s_out)
            out[i] = [Command("VEC_NORM", name, {"index": i, "kind": nd.op, "L": L, "in_bits": 16 if u == "norm16" else 8, "in_scale": "row", "eps": float(nd.attrs["eps"]), "gains": f"{name}.vg",
                                                 "gain_scale": s_g, "bias": bias, "out_scale": s_out, "mant_o": mo, "sh_o": so, "passes": 2})]
        elif u == "gate":  # per-row scales only: no calibration
            out[i] = [Command("VEC_GATE", name, {"index": i, "kind": "gelu" if nd.op == "gelu" else "silu", "in_scale": "row", "out_scale": "row", "passes": 2, "F": EXP_F})]
        elif u == "add":
            out[i] = [Command("VEC_ADD", name, {"index": i, "in_bits": ADD_BITS, "out_bits": ADD_BITS, "in_scale": "row", "out_scale": "row", "passes": 2})]
        elif u == "mul":
            out[i] = [Command("VEC_MUL", name, {"index": i, "in_scale": "row", "out_scale": "row", "passes": 2})]
        elif u == "rope":
            # K's rotation read only by the unit's cache write leaves at the cache's static scale: one rounding, one pass
            users = readers.get(name, [])
            to_cache = name not in graph.outputs and len(users) == 1 and nodes.get(users[0]) == "kv" and graph.nodes[users[0]].inputs[1] == name
            s_out = _scale(amax, graph.nodes[users[0]].outputs[0]) if to_cache else "row"
            out[i] = [Command("VEC_ROPE", name, {"index": i, "in_bits": STREAM_BITS, "in_scale": "row", "out_scale": s_out, "passes": 1 if to_cache else 2,
                                                 "table_bits": vu.ROPE_TABLE_BITS})]
        elif u == "kv":
            out[i] = [Command("VEC_KV", name, {"index": i, "in_bits": STREAM_BITS, "scale": _scale(amax, name)})]
        else:
            sk, sv = (_scale(amax, v) for v in nd.inputs[1:3])
            s_out = _scale(amax, name)
            cache_codes = nd.op == "cache_attention" and "kv" in nodes.values()  # the cache holds VEC_KV's int8 codes (-128 included)
            mask = "causal" if nd.op == "attention" and nd.attrs.get("causal") else ("positions" if nd.op == "cache_attention" else "none")
            out[i] = [  # per-row query scales: Shiftmax's pair is dyadic(s_q[row] k_scale attn_scale 2^F), made per row
                Command("VEC_QK", name, {"index": i, "q_scale": "row", "k_scale": sk, "mask": mask, "cache_codes": cache_codes}),
                Command("VEC_SOFTMAX", name, {"in_bits": 32, "in_scale": "row", "k_scale": sk, "attn_scale": float(nd.attrs["scale"]), "F": EXP_F}),
                Command("VEC_PV", name, {"index": i, "v_scale": sv, "out_scale": s_out, "passes": 2, "cache_codes": cache_codes}),
            ]
    return out


# ----------------------------------------------------------------------------------------------------
# hwsim.vector's functions with one dyadic pair per row: the golden functions take one pair per call, and a
# per-row scale gives each row its own. Each line is the golden function's (tests/compiler/backends/accel/
# test_vector_ops.py checks them against one golden call per row); axis 1 of the attention tensors [H, S, ..]
# is the row, axis 0 of the others.


def norm_input(x, kind: str, eps: float, in_bits: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, row scales, eps_int) of a norm's float rows x [R, L]: QUANT_ACT's per-row int8 (golden.quantize_a8;
    in_bits 16: the same rule at 32767), except that a row so small that its eps_int would pass the unit's port
    (EPS_PORTS: 2^16 - 1, int16 2^32 - 1) is quantized at the coarser scale where eps_int fits, so the norm still adds eps."""
    x = np.asarray(x, np.float32)
    L = x.shape[1]
    qmax = (1 << (in_bits - 1)) - 1
    amax = np.abs(x).max(axis=1) / np.float32(qmax)
    port = EPS_PORTS[in_bits]
    s_min = np.float32(math.sqrt((L if kind == "rmsnorm" else L**3) * eps / port) * (1 + 1e-6))  # norm_eps_int(s_min) <= port
    sa = np.where(amax > 0, np.maximum(amax, s_min), np.float32(1.0)).astype(np.float32)
    qa = np.clip(np.rint(x / sa[:, None]), -qmax, qmax).astype(np.int64)
    return qa, sa, np.array([vu.norm_eps_int(kind, L, eps, float(s)) for s in sa], np.int64)


def row_pairs(c) -> tuple[np.ndarray, np.ndarray]:
    """hwsim.vector.dyadic of each scale in c: (mant, sh) int64 arrays of c's shape."""
    c = np.asarray(c, np.float64)
    pairs = [vu.dyadic(float(x)) for x in c.reshape(-1)]
    return np.array([m for m, _ in pairs], np.int64).reshape(c.shape), np.array([s for _, s in pairs], np.int64).reshape(c.shape)


def gated_rows(x, kind, mant_i, sh_i, mant_o, sh_o, F: int = vu.F_BITS) -> np.ndarray:
    """hwsim.vector.gated of rows x [R, N], pairs [R]."""
    x = vu._check_int(x, -128, 127, f"{kind} inputs (int8)")
    c = (slice(None), None)
    u = (x * mant_i[c]) >> sh_i[c]
    g = vu.shift_sigmoid(vu.gate_arg(u, kind), F)
    return np.clip(golden.rshift_round(x * g * mant_o[c], sh_o[c]), -128, 127)


def norm_rows(x, g, kind, mant_o, sh_o, eps, b, in_bits: int = 8) -> np.ndarray:
    """hwsim.vector.norm of rows x [R, L] (int8, or int16 for in_bits 16), pairs and eps_int [R], bias b [R, L] or
    None; rows grouped by the widths their eps_int gives (NormShape)."""
    h = 1 << (in_bits - 1)
    x = vu._check_int(x, -h, h - 1, f"{kind} inputs (int{in_bits})")
    y = np.zeros_like(x)
    shapes = [vu.NormShape(kind, x.shape[1], int(e), in_bits) for e in eps]
    for tw in sorted({sh.tw for sh in shapes}):
        r = np.array([sh.tw == tw for sh in shapes])
        shape = shapes[int(np.argmax(r))]
        d = vu.norm_d(x[r], kind)
        ss = (d * d).sum(axis=-1, keepdims=True) + eps[r][:, None]
        s = np.maximum(vu.isqrt_bitwise(ss << (2 * shape.P), shape.tw), vu.NORM_S_MIN)
        a = golden.rshift_round(d * vu.recip(shape.rb, s), np.int64(shape.rb - shape.P - shape.A))
        bb = 0 if b is None else b[r]
        y[r] = vu.norm_out(a * g * mant_o[r][:, None], sh_o[r][:, None], bb, shape.bias_frac)
    return y


def shiftmax_rows(x, mant, sh, in_bits: int, F: int = vu.F_BITS) -> np.ndarray:
    """hwsim.vector.shiftmax of scores x [H, S, T], pairs [S] (one per query row)."""
    x = vu._check_int(x, -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1, f"Shiftmax inputs (int{in_bits})")
    c = (None, slice(None), None)
    z = ((x - x.max(axis=-1, keepdims=True)) * mant[c]) >> sh[c]
    e = vu.shift_exp(z, F)
    r = vu.recip(F + vu.RECIP_EXTRA, e.sum(axis=-1, keepdims=True))
    return np.minimum((r * e) >> (F + vu.PROB_BITS), 255)


def matmul_rows(p, v, mant, sh) -> np.ndarray:
    """hwsim.vector.attn_matmul of uint8 p [H, S, T] and int8 v [H, T, D], pairs [H, S] (one per head and row)."""
    acc = vu.attn_scores(p, v, a_unsigned=True)
    return np.clip(golden.rshift_round(acc * mant[..., None], sh[..., None]), -128, 127)


def row_input(x, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The host's per-row hand-off of float rows x [R, N] at int`bits`: QUANT_ACT's rule (golden.quantize_a8) at
    2^(bits-1) - 1 -> (codes int64, row scales float64)."""
    if bits == 8:
        qa, sa = golden.quantize_a8(x)
        return qa, sa.astype(np.float64)
    ft = np.float32 if bits <= 16 else np.float64  # 2^31 - 1 is not a float32
    x = np.asarray(x, ft)
    qmax = ft((1 << (bits - 1)) - 1)
    sa = np.abs(x).max(axis=1) / qmax
    sa = np.where(sa > 0, sa, ft(1.0)).astype(ft)
    return np.clip(np.rint(x / sa[:, None]), -qmax, qmax).astype(np.int64), sa.astype(np.float64)


def clamp_pairs(c) -> tuple[np.ndarray, np.ndarray]:
    """row_pairs of scales clipped to [2^-40, 2^15]: outside, every nonzero int16 operand rounds to 0 or
    saturates int16 either way, so the result is the unclipped one and the pair stays in the unit's shift range."""
    return row_pairs(np.clip(np.asarray(c, np.float64), 2.0**-40, 2.0**15))


def requant_rows(x, mant, sh, in_bits: int, out_bits: int = 8) -> np.ndarray:
    """hwsim.vector.requant of rows x [R, N], pairs [R]."""
    x = vu._check_int(x, *vu._srange(in_bits), f"requant inputs (int{in_bits})")
    return vu._out(x * mant[:, None], sh[:, None], out_bits)


def add_rows(a, b, mant_a, mant_b, sh, in_bits: int = 16, out_bits: int = 16) -> np.ndarray:
    """hwsim.vector.add of rows a, b [R, N], pairs [R] (one shift per row)."""
    a = vu._check_int(a, *vu._srange(in_bits), f"add operand a (int{in_bits})")
    b = vu._check_int(b, *vu._srange(in_bits), f"add operand b (int{in_bits})")
    c = (slice(None), None)
    return vu._out(a * mant_a[c] + b * mant_b[c], sh[c], out_bits)


def add_pairs(c_a, c_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hwsim.vector.add_scales per row: (mant_a, mant_b, sh) [R]."""
    t = [vu.add_scales(float(x), float(y)) for x, y in zip(c_a, c_b)]
    return tuple(np.array([r[k] for r in t], np.int64) for k in range(3))


def mul_rows(a, b, mant, sh) -> np.ndarray:
    """hwsim.vector.mul of int8 rows a, b [R, N], pairs [R]."""
    a = vu._check_int(a, -128, 127, "mul operand a (int8)")
    b = vu._check_int(b, -128, 127, "mul operand b (int8)")
    return vu._out(a * b * mant[:, None], sh[:, None], 8)


def rope_rows(x, cq, sq, mant, sh, in_bits: int = STREAM_BITS) -> np.ndarray:
    """hwsim.vector.rope of x [S, H, D], tables [S, D/2] (one per token, shared by its heads), pairs [S]."""
    x = vu._check_int(x, *vu._srange(in_bits), f"rope inputs (int{in_bits})")
    h = x.shape[-1] // 2
    c, s_ = cq[:, None, :], sq[:, None, :]
    lo, hi = x[..., :h], x[..., h:]
    t = np.concatenate([lo * c - hi * s_, hi * c + lo * s_], axis=-1)
    return vu._out(t * mant[:, None, None], sh[:, None, None], 8)


# ----------------------------------------------------------------------------------------------------
# Execution (compiler/backends/accel/reference.py calls `VectorRunner.run` for every VEC_* command)


def quantize_static(x, s: float, lo: int = -127) -> np.ndarray:
    """The host's hand-off of a float tensor to the unit at a static scale: clamp(rint(x / s), -127, 127).
    lo -128: a cache VEC_KV wrote, whose values are its int8 codes times s (read back exactly, -128 included)."""
    return np.clip(np.rint(np.asarray(x, np.float32) / np.float32(s)), lo, 127).astype(np.int64)


class VectorRunner:
    """Runs VEC_* commands on an executor's float env; `ints` holds int8 codes and their per-tensor scale
    (the unit's outputs, for QUANT_ACT from_vector) and the attention's internal scores and probabilities."""

    def __init__(self, graph, tensors: dict):
        self.graph = graph
        self.tensors = tensors
        self.ints: dict[str, tuple[np.ndarray, float]] = {}
        self.bits: dict[str, int] = {}  # the width of each entry of `ints` past 8 (the residual adds')
        self.counts: dict[str, int] = {}
        self.shapes: list[dict] = []  # one per command run: what hwsim.cost.vector.command_costs reads
        self._rows: dict[str, tuple[int, int]] = {}  # attention: (key rows T, query heads per KV head) from VEC_QK to VEC_PV

    def value(self, env, name):
        return self.graph.consts[name] if name in self.graph.consts else env[name]

    def run(self, c: Command, env: dict) -> None:
        self.counts[c.op] = self.counts.get(c.op, 0) + 1
        a = c.args
        if c.op == "VEC_NORM":
            self._norm(c, env)
        elif c.op == "VEC_GATE":
            self._gate(c, env)
        elif c.op == "VEC_QK":
            nd = self.graph.nodes[a["index"]]
            q, k = (self.value(env, n) for n in nd.inputs[:2])
            s, h, d = q.shape
            if nd.op == "cache_attention":
                pos = np.asarray(self.value(env, nd.inputs[3]))
                t = int(pos.max()) + 1
                k = k[:t]  # the cache's rows 0..t-1 (int8 codes at k_scale / v_scale)
                allowed = np.arange(t)[None, :] <= pos[:, None]
            else:
                t = k.shape[0]
                allowed = np.arange(t)[None, :] <= (t - s) + np.arange(s)[:, None] if a["mask"] == "causal" else None
            rep = h // k.shape[1]
            qa, sq = self.operand(env, nd.inputs[0], (s, h * d), 8)  # per row (token), as QUANT_ACT (VEC_ROPE's codes as they are)
            qh = qa.reshape(s, h, d).transpose(1, 0, 2)  # [H, S, D]
            lo = -128 if a.get("cache_codes") else -127
            kt = np.repeat(quantize_static(k, a["k_scale"], lo).transpose(1, 2, 0), rep, axis=0)  # [H, D, T]: query head h reads KV head h // rep
            acc = vu.attn_scores(qh, kt)
            if allowed is not None:
                acc = np.where(allowed[None], acc, MASKED)
            self.ints[f"{c.node}.scores"] = (acc, sq.astype(np.float64))
            self._rows[c.node] = (t, rep)
            self.shapes.append({"op": c.op, "node": c.node, "heads": h, "S": s, "T": t, "D": d})
        elif c.op == "VEC_SOFTMAX":
            acc, sq = self.ints.pop(f"{c.node}.scores")
            mant, sh = row_pairs(sq * a["k_scale"] * a["attn_scale"] * 2.0 ** a["F"])
            self.ints[f"{c.node}.probs"] = (shiftmax_rows(acc, mant, sh, a["in_bits"], a["F"]), 0.0)
            self.shapes.append({"op": c.op, "node": c.node, "heads": acc.shape[0], "S": acc.shape[1], "T": acc.shape[2], "in_bits": a["in_bits"]})
        elif c.op == "VEC_PV":
            self._pv(c, env)
        elif c.op == "VEC_ADD":
            self._add(c, env)
        elif c.op == "VEC_MUL":
            self._mul(c, env)
        elif c.op == "VEC_ROPE":
            self._rope(c, env)
        elif c.op == "VEC_KV":
            self._kv(c, env)
        else:
            raise ValueError(f"unknown vector command {c.op}")

    def _pv(self, c: Command, env: dict) -> None:
        """uint8 P x int8 V with the probabilities' row sum n (256 - T <= n <= 256: Shiftmax floors each one)
        folded into the output pair, i.e. divided by n / 256, then two passes per token row (all heads), as
        VEC_NORM: the calibrated scale gives the row's range m, then the row leaves at out_scale (m + 1) / 127."""
        a = c.args
        p, _ = self.ints.pop(f"{c.node}.probs")
        t, rep = self._rows.pop(c.node)
        v = self.value(env, self.graph.nodes[a["index"]].inputs[2])[:t]
        vh = np.repeat(quantize_static(v, a["v_scale"], -128 if a.get("cache_codes") else -127).transpose(1, 0, 2), rep, axis=0)  # [H, T, D]
        n = np.maximum(p.sum(axis=-1), 1).astype(np.float64)  # [H, S]
        y1 = matmul_rows(p, vh, *row_pairs(a["v_scale"] / (a["out_scale"] * n)))
        scale = a["out_scale"] * (np.abs(y1).max(axis=(0, 2)) + 1) / 127
        y = matmul_rows(p, vh, *row_pairs(a["v_scale"] / (scale[None, :] * n)))
        self.shapes.append({"op": c.op, "node": c.node, "heads": p.shape[0], "S": p.shape[1], "T": t, "D": vh.shape[2], "passes": a["passes"]})
        self._emit(c.node, y.transpose(1, 0, 2), scale, env)

    def _norm(self, c: Command, env: dict) -> None:
        """Two passes per row: at the calibrated scale (its largest |code| m is the row's range), then at
        out_scale (m + 1) / 127, so each row leaves at its own scale, the arrays' per-token A8 format."""
        a = c.args
        nd = self.graph.nodes[a["index"]]
        x = np.asarray(self.value(env, nd.inputs[0]), np.float32)
        L, kind = a["L"], a["kind"]
        ib = a.get("in_bits", 8)
        qa, sa, eps = norm_input(x.reshape(-1, L), kind, a["eps"], ib)
        g = self.tensors[a["gains"]].astype(np.int64)
        beta = None if a["bias"] is None else self.tensors[a["bias"]].astype(np.float64)
        s_out, s_g = a["out_scale"], a["gain_scale"]
        rows = len(qa)
        self.shapes.append({"op": c.op, "node": c.node, "kind": kind, "L": L, "rows": rows, "passes": a["passes"], "in_bits": ib})

        bsh = vu.NormShape(kind, L, 0, ib)
        bmax, bf = (1 << (bsh.bias_bits - 1)) - 1, 2.0**bsh.bias_frac

        def bias(scale):  # int8 at the output LSB, or int16 at 2^-8 of it (int16 inputs)
            return None if beta is None else np.clip(np.rint(beta[None, :] * bf / np.asarray(scale, np.float64).reshape(-1, 1)), -bmax - 1, bmax).astype(np.int64)

        y1 = norm_rows(qa, g, kind, np.full(rows, a["mant_o"]), np.full(rows, a["sh_o"]), eps, bias(np.full(rows, s_out)), ib)
        scale = s_out * (np.abs(y1).max(axis=1) + 1) / 127  # the row's largest value is below (m + 1/2) out_scale
        mo, so = row_pairs(math.sqrt(L) * s_g / scale * 2.0**-vu.NORM_A)  # hwsim.vector.norm_scales per row
        self._emit(c.node, norm_rows(qa, g, kind, mo, so, eps, bias(scale), ib).reshape(x.shape), scale, env)

    def _gate(self, c: Command, env: dict) -> None:
        """Per row, two passes: the input at its own int8 scale s and the output at s (|GELU(x)|, |SiLU(x)| <=
        max |x|) give the output's range m, then the row leaves at s (m + 1) / 127."""
        a = c.args
        x = np.asarray(self.value(env, self.graph.nodes[a["index"]].inputs[0]), np.float32)
        qa, sa = golden.quantize_a8(x.reshape(-1, x.shape[-1]))
        s = sa.astype(np.float64)
        F = a["F"]
        mi, si = row_pairs(s * 2.0**F)  # hwsim.vector.gate_scales per row
        y1 = gated_rows(qa, a["kind"], mi, si, *row_pairs(s * 2.0**-vu.PROB_BITS / s), F)
        scale = s * (np.abs(y1).max(axis=1) + 1) / 127
        y = gated_rows(qa, a["kind"], mi, si, *row_pairs(s * 2.0**-vu.PROB_BITS / scale), F)
        self.shapes.append({"op": c.op, "node": c.node, "kind": a["kind"], "rows": qa.shape[0], "width": qa.shape[1], "passes": a["passes"]})
        self._emit(c.node, y.reshape(x.shape), scale, env)

    def operand(self, env, name: str, shape: tuple, bits: int) -> tuple[np.ndarray, np.ndarray]:
        """(codes [R, N] int64, row scales [R] float64) of tensor `name` seen as `shape` (rows first): a unit's output
        codes as they are when they fit int`bits`, else the host's per-row hand-off (row_input) of its values."""
        if name in self.ints and self.bits.get(name, 8) == bits:  # codes of this width (an int8 row's scale is no int32 LSB)
            y, sc = self.ints[name]
            if y.size == math.prod(shape) and y.shape[0] == shape[0]:
                return y.reshape(shape), np.broadcast_to(np.asarray(sc, np.float64), (shape[0],)).copy()
        return row_input(np.asarray(self.value(env, name), np.float32).reshape(shape), bits)

    def _rows_of(self, nd, env) -> tuple[tuple, tuple]:
        """(output shape, its [rows, values] view) of a two-operand elementwise node: rows are its first axis (tokens)."""
        out_shape = np.broadcast_shapes(*(np.shape(self.value(env, n)) for n in nd.inputs[:2]))
        rows = out_shape[0] if len(out_shape) > 1 else 1
        return out_shape, (rows, math.prod(out_shape) // rows)

    def _add(self, c: Command, env: dict) -> None:
        """Residual add at int`in_bits` (int32): each operand per row at its own scale, pass 1 at s_a + s_b (no operand
        pair can saturate it) gives the row's range m, pass 2 writes the row at (s_a + s_b) (m + 1) / (2^(OB-1) - 1)."""
        a = c.args
        nd = self.graph.nodes[a["index"]]
        out_shape, shape = self._rows_of(nd, env)
        rows = shape[0]
        ib, ob = a["in_bits"], a["out_bits"]
        (qa, sa), (qb, sb) = (self._broadcast_operand(env, n, out_shape, shape, ib) for n in nd.inputs[:2])
        s1 = sa + sb
        y1 = add_rows(qa, qb, *add_pairs(sa / s1, sb / s1), ib, ob)
        # pass 2 zooms in by at most 2^15, so each operand's scale stays below 2^16 output LSBs (a dyadic pair
        # without a left shift); a row whose sum cancels further keeps the extra bits unused
        scale = s1 * np.maximum((np.abs(y1).max(axis=1) + 1) / ((1 << (ob - 1)) - 1), 2.0**-15)
        y = add_rows(qa, qb, *add_pairs(sa / scale, sb / scale), ib, ob)
        self.shapes.append({"op": c.op, "node": c.node, "rows": rows, "L": shape[1], "passes": a["passes"], "in_bits": ib, "out_bits": ob})
        self._emit(c.node, y.reshape(out_shape), scale, env, ob)

    def _broadcast_operand(self, env, name: str, out_shape: tuple, shape: tuple, bits: int):
        """An add / mul operand over the output's rows: a constant or a smaller tensor broadcast first (MiniLM's
        token-type row), then handed over per row."""
        if tuple(np.shape(self.value(env, name))) == tuple(out_shape):
            return self.operand(env, name, shape, bits)
        x = np.broadcast_to(np.asarray(self.value(env, name), np.float32), out_shape)
        return row_input(np.ascontiguousarray(x).reshape(shape), bits)

    def _mul(self, c: Command, env: dict) -> None:
        """SwiGLU's product of two int8 tensors (the gate's codes as they are): pass 1 at s_a s_b 2^14 / 127 (|a b| <=
        2^14), pass 2 at that (m + 1) / 127, as the other units."""
        a = c.args
        nd = self.graph.nodes[a["index"]]
        out_shape, shape = self._rows_of(nd, env)
        (qa, sa), (qb, sb) = (self._broadcast_operand(env, n, out_shape, shape, 8) for n in nd.inputs[:2])
        s1 = sa * sb * (1 << 14) / 127
        y1 = mul_rows(qa, qb, *clamp_pairs(sa * sb / s1))
        scale = s1 * (np.abs(y1).max(axis=1) + 1) / 127
        y = mul_rows(qa, qb, *clamp_pairs(sa * sb / scale))
        self.shapes.append({"op": c.op, "node": c.node, "rows": shape[0], "L": shape[1], "passes": a["passes"]})
        self._emit(c.node, y.reshape(out_shape), scale, env)

    def _rope(self, c: Command, env: dict) -> None:
        """RoPE of [S, H, D] at int16 per token (all heads at one scale, as QUANT_ACT), int16 cos / sin tables of the
        token's position (hwsim.vector.rope_table over the reference's inverse frequencies), int8 out in two passes:
        pass 1 at s_in 32767 sqrt(2) / 127 bounds |y|, pass 2 at that (m + 1) / 127; or, for K on its way to the
        unit's cache write, one pass at the cache's static scale (VEC_KV's requant is then the identity)."""
        from compiler.reference import rope_inv_freq

        a = c.args
        nd = self.graph.nodes[a["index"]]
        x = np.asarray(self.value(env, nd.inputs[0]), np.float32)
        pos = np.asarray(self.value(env, nd.inputs[1]))
        S, H, D = x.shape
        ib = a["in_bits"]
        qx, sx = self.operand(env, nd.inputs[0], (S, H * D), ib)
        qx = qx.reshape(S, H, D)
        cq, sq = vu.rope_table(pos, rope_inv_freq(D, nd.attrs["theta"], nd.attrs.get("scaling")))
        t = 2.0 ** -a["table_bits"]
        if a["out_scale"] != "row":  # a static scale (the KV cache's): one pass
            scale = float(a["out_scale"])
            y = rope_rows(qx, cq, sq, *clamp_pairs(sx * t / scale), ib)
        else:
            s1 = sx * ((1 << (ib - 1)) - 1) * (math.sqrt(2) * (1 + 2.0**-12)) / 127  # |c| + |s| <= sqrt(2) 2^14 up to the tables' rounding
            y1 = rope_rows(qx, cq, sq, *clamp_pairs(sx * t / s1), ib)
            scale = s1 * (np.abs(y1).max(axis=(1, 2)) + 1) / 127
            y = rope_rows(qx, cq, sq, *clamp_pairs(sx * t / scale), ib)
        self.shapes.append({"op": c.op, "node": c.node, "rows": S * H, "L": D, "passes": a["passes"], "in_bits": ib})
        self._emit(c.node, y, scale, env)

    def _kv(self, c: Command, env: dict) -> None:
        """KV cache write: the new rows' codes (VEC_ROPE's int8 as they are, else the host's int16 hand-off) requantized
        per token to int8 at the cache's static scale; the cache array stores code x scale (fp16 or f32: exact to
        recover the code, |code| <= 128 < 2^11), which VEC_QK / VEC_PV read back as the codes."""
        from compiler.reference import KERNELS

        a = c.args
        nd = self.graph.nodes[a["index"]]
        cache, new, pos = (self.value(env, n) for n in nd.inputs[:3])
        new = np.asarray(new, np.float32)
        S = new.shape[0]
        shape = (S, math.prod(new.shape[1:]))
        src = nd.inputs[1]
        ib = 8 if src in self.ints and self.bits.get(src, 8) == 8 else a["in_bits"]
        q, sr = self.operand(env, src, shape, ib)
        y = requant_rows(q, *clamp_pairs(sr / a["scale"]), ib, 8)
        rows = (y.astype(np.float32) * np.float32(a["scale"])).reshape(new.shape)
        self.shapes.append({"op": c.op, "node": c.node, "rows": S * (new.shape[1] if new.ndim == 3 else 1), "L": new.shape[-1], "in_bits": ib})
        env[c.node] = KERNELS["kv_write"]([cache, rows, pos], nd.attrs, None)[0]

    def _emit(self, name: str, y: np.ndarray, scale, env: dict, bits: int = 8) -> None:
        """scale: one per tensor, or one per row (token): a [rows] array along y's first axis; bits: the codes' width."""
        self.ints[name] = (y, scale)
        if bits != 8:
            self.bits[name] = bits
        s = np.asarray(scale, np.float32)
        env[name] = (y.astype(np.float32) * s.reshape(s.shape + (1,) * (y.ndim - s.ndim))).astype(np.float32)

    def pass_through(self, node, env: dict) -> None:
        """A reshape of a unit's output keeps its codes (the o-projection reads the attention's int8 directly)."""
        src = node.inputs[0]
        if src in self.ints and self.ints[src][0].ndim == np.ndim(env[src]):
            y, s = self.ints[src]
            self.ints[node.outputs[0]] = (y.reshape(np.shape(env[node.outputs[0]])), s)
            if src in self.bits:
                self.bits[node.outputs[0]] = self.bits[src]


def run_on_ref(graph, vec_cmds: dict[int, list[Command]], tensors: dict, feeds: dict) -> dict:
    """The graph on `ref` with the vector unit's ops in their place: what the unit costs beside linears the
    arrays cannot run (W8), measured against the same graph's host ops. Returns the graph's outputs."""
    from compiler.reference import Interpreter

    runner = VectorRunner(graph, tensors)

    def after(i, node, ins, outs):
        if i not in vec_cmds:
            return outs
        env = dict(zip(node.inputs, ins))
        for c in vec_cmds[i]:
            runner.run(c, env)
        return [env[node.outputs[0]]]

    interp = Interpreter(graph)
    env = interp.start(feeds)
    interp.run_nodes(env, range(len(graph.nodes)), keep=set(graph.outputs), after_node=after)
    return {o: env[o] for o in graph.outputs}
