"""A quantized KV cache: `lowbit compile --kv fp16|fp8|int8|int4|int2[-rot][-kc][-gN][-wN]` (llama.cpp's q8_0 / q4_0 cache types, vLLM's fp8 one,
KIVI's per-token values).

The in-place cache (docs/DESIGN.md, KV cache) keeps every row as integer codes with one scale per (row, head,
group of GROUP = 32 along the head dimension), keys and values alike:

    s = fp16(max |x| over the group / qmax),  q = clamp(rint(x / s), -qmax, qmax)   (qmax 127 for int8, 7 for int4)

(s = 0 for an all-zero group, whose codes are 0). int8 codes are stored as i8 [C, H, D]; int4 codes as q + 8
in nibbles, u8 [C, H, D/2], in llama.cpp's q4_0 order: within each group of 32, byte i holds element i in its low
nibble and element i + 16 in its high one (so 16 consecutive bytes give 16 consecutive values without a shuffle);
scales f16 [C, H, D/32]. `kv_write_q` quantizes the new rows into the fed arrays (in place); `cache_attention_q`
reads rows 0..positions[i] as s * q (float32, exact) and is `cache_attention` over them. The pass rewrites a
graph built with the float in-place cache: each layer's past_key.i / past_value.i become the codes, with
past_key_scale.i / past_value_scale.i beside them (and the present_* outputs likewise). `fp16` keeps the float
ops over f16 arrays (vLLM's and llama.cpp's default cache type: half of f32's bytes). `int2` has four levels
(q - 1.5) s without a zero, s = fp16(max |x| / 1.5), codes clamp(rint(x / s + 1.5), 0, 3) four to a byte per 64 values
(byte e holds elements e + 16 k at bits 2 k), u8 [C, H, D/4]. `fp8`: OCP FP8 E4M3 codes (bias 7, max 448, no infinities)
with the same fp16 scale per group, s = fp16(max |x| / 448), code = e4m3(clamp(x / s, -448, 448)) rounded to nearest
even (the sign bit set for x / s < 0), u8 [C, H, D]: the value is s * e4m3(code) (vLLM's fp8 cache holds one scale per
tensor; a scale per 32 values costs 1/16 byte more per value and keeps small groups out of the subnormals).

Options (compiler.kvformat, the grammar): `-rot` (rotate_graph: a Hadamard rotation of every K and V head, exact in real
arithmetic), `-kc` (keys per channel, KIVI: the keys' kv_write becomes `kv_write_kc`, a scale and a minimum per channel
over each group of 32 rows, quantized from the window ring and the step's rows; past_key_scale.i f16[G, H, 2 D]),
`-gN` (a scale per N = 64 or 128 values instead of 32; int4's nibble order is then per group of N: byte i holds
elements i and i + N/2) and `-wN` (the N most recent rows read in float32 from two rings per layer, KIVI's
full-precision window).
"""

from __future__ import annotations

from compiler.errors import LowbitError
from compiler.ir import Graph, Node, TensorType
from compiler.kvformat import DEFAULT_KV, GROUP, KEY_GROUP_DIM, KVSpec, kv_bytes_per_token, parse_kv  # noqa: F401 (the format's grammar, used here and re-exported)

def rotation_size(head_dim: int) -> int:
    """The Hadamard block along a head: the largest power of two dividing head_dim (the whole head when it is one)."""
    return head_dim & -head_dim


def _rotated(nodes: list[Node], x: str, size: int) -> str:
    """Append hadamard(x) to nodes and return its output (x's name with a .had suffix)."""
    out = f"{x}.had"
    nodes.append(Node("hadamard", [x], [out], {"size": size}))
    return out


def rotate_graph(graph: Graph) -> Graph:
    """The in-place cache with every K and V head rotated by the orthonormal Hadamard H (ir op `hadamard`).
    Exact in real arithmetic: keys and queries are rotated after RoPE, so q.k = (Hq).(Hk); values are stored as Hv,
    so attention yields H o and one more H (H H = I) gives o back. The rotation spreads a head's outlier channels
    over all of it, which is what a cache quantized per token needs."""
    d = graph.meta["hparams"]["head_dim"]
    size = rotation_size(d)
    if size < 2:
        raise LowbitError(f"--kv ...-rot: head_dim {d} has no power-of-two block to rotate", "drop -rot")
    g = graph.copy()
    nodes: list[Node] = []
    for n in g.nodes:
        if n.op == "kv_write":
            cache, new, pos = n.inputs
            nodes.append(Node(n.op, [cache, _rotated(nodes, new, size), pos], list(n.outputs), dict(n.attrs)))
        elif n.op == "cache_attention":
            q, kc, vc, pos = n.inputs
            out = n.outputs[0]
            nodes.append(Node(n.op, [_rotated(nodes, q, size), kc, vc, pos], [f"{out}.rot"], dict(n.attrs)))
            nodes.append(Node("hadamard", [f"{out}.rot"], [out], {"size": size}))
        else:
            nodes.append(n)
    g.nodes = nodes
    g.infer_types()
    g.verify()
    return g


def kv_quant_graph(graph: Graph, fmt: str) -> Graph:
    """A copy of graph whose in-place KV cache is stored in `fmt` (module doc); plain f32 returns graph as it is."""
    spec = parse_kv(fmt)
    bits = spec.bits
    if spec == KVSpec("f32"):
        return graph
    if not graph.meta.get("causal"):
        raise LowbitError(f"--kv {fmt}: model {graph.name} has no KV cache (an encoder)", "drop --kv")
    if graph.meta.get("kv") != "inplace":
        raise LowbitError(f"--kv {fmt} needs the in-place KV cache, and this graph concatenates its cache (LOWBIT_KV_CACHE=concat)",
                          "unset LOWBIT_KV_CACHE (the in-place form is the default)")
    d = graph.meta["hparams"]["head_dim"]
    unit = max(spec.group, 64 if bits == 2 else 0)
    if bits is not None and d % unit:
        raise LowbitError(f"--kv {fmt}: head_dim {d} is not a multiple of {unit} (the cache's {'packing' if unit > spec.group else 'group'})",
                          "use a smaller -gN, or --kv fp16 for this model" if spec.group > GROUP else "use --kv fp16 for this model")
    if spec.rotate:
        graph = rotate_graph(graph)
    g = graph.copy()
    if bits is None:
        if spec.fmt == "fp16":  # the same ops over f16 arrays: kv_write rounds the new rows, cache_attention reads them as f32
            for k, t in g.inputs.items():
                if k.startswith(("past_key.", "past_value.")):
                    g.inputs[k] = TensorType(t.shape, "f16")
            g.infer_types()
            g.verify()
        g.meta["kv_format"] = str(spec)
        return g
    attrs = {"bits": bits, "group": spec.group, "code": spec.code}
    kv_heads = graph.meta["hparams"]["kv_heads"]
    new_rows: dict[str, str] = {}  # present cache name -> the rows its kv_write stores this step
    nodes: list[Node] = []

    def ring(cache: str) -> str:  # the float window ring beside a past_key / past_value cache
        r = cache.replace("present_key.", "past_key_window.").replace("present_value.", "past_value_window.")
        r = r.replace("past_key.", "past_key_window.").replace("past_value.", "past_value_window.")
        g.inputs[r] = TensorType((spec.window, kv_heads, d), "f32")
        return r

    for n in g.nodes:
        if n.op == "kv_write":
            cache, new, pos = n.inputs
            t = g.inputs[cache]
            rows, heads = t.shape[0], t.shape[1]
            g.inputs[cache] = TensorType((rows, heads, d * bits // 8), "i8" if bits == 8 and spec.code == "int" else "u8")
            sname = cache.replace("past_key.", "past_key_scale.").replace("past_value.", "past_value_scale.")
            out = n.outputs[0]
            sout = out.replace("present_key.", "present_key_scale.").replace("present_value.", "present_value_scale.")
            new_rows[out] = new
            block = {k: v for k, v in n.attrs.items() if k == "block"}
            if spec.keys_channel and cache.startswith("past_key."):
                # a scale and a minimum per channel and token group, quantized from the window ring and the step's rows
                g.inputs[sname] = TensorType((KEY_GROUP_DIM, heads, 2 * d), "f16")
                nodes.append(Node("kv_write_kc", [cache, sname, ring(cache), new, pos], [out, sout],
                                  {"bits": bits, "group": spec.group, "window": spec.window, **block}))
                continue
            g.inputs[sname] = TensorType((rows, heads, d // spec.group), "f16")
            nodes.append(Node("kv_write_q", [cache, sname, new, pos], [out, sout], {**attrs, **block}))
        elif n.op == "cache_attention":
            q, kc, vc, pos = n.inputs
            ks = kc.replace("present_key.", "present_key_scale.")
            vs = vc.replace("present_value.", "present_value_scale.")
            ins, outs, wattrs = [q, kc, ks, vc, vs, pos], list(n.outputs), {}
            if spec.window:
                # float rings of the last R rows (fixed size, not per cache row) and this step's rows, read by the attention
                rings = [ring(c) for c in (kc, vc)]
                ins += [*rings, new_rows[kc], new_rows[vc]]
                outs += [r.replace("past_", "present_") for r in rings]
                wattrs = {"window": spec.window}
            if spec.keys_channel:
                wattrs["keys"] = "channel"
            nodes.append(Node("cache_attention_q", ins, outs, {**n.attrs, **attrs, **wattrs}))
        else:
            nodes.append(n)
    g.nodes = nodes
    outs = []
    for o in g.outputs:
        outs.append(o)
        if o.startswith(("present_key.", "present_value.")):
            outs.append(o.replace("present_key.", "present_key_scale.").replace("present_value.", "present_value_scale."))
            if spec.window:
                outs.append(o.replace("present_key.", "present_key_window.").replace("present_value.", "present_value_window."))
    g.outputs = outs
    g.meta["kv_format"] = str(spec)
    g.infer_types()
    g.verify()
    return g


KV_ATTRS = ("bits", "group", "code", "window", "keys")  # what kv_quant_graph adds to the attention's attributes


def float_cache_graph(graph: Graph) -> Graph:
    """kv_quant_graph undone: the in-place float32 cache the graph was built with, whatever its --kv (the codes and
    their scales, rings, fp16 arrays and -rot's rotations removed), so that a compiled artifact can be given another
    cache format at run time: kv_quant_graph(float_cache_graph(g), fmt)."""
    if graph.meta.get("kv") != "inplace" or "kv_format" not in graph.meta:
        return graph
    g = graph.copy()
    alias: dict[str, str] = {}  # a rotated value -> the value it rotates
    renamed: dict[str, str] = {}  # a rotated attention output -> the output it had
    for n in g.nodes:
        if n.op == "hadamard" and n.outputs[0].endswith(".had"):
            alias[n.outputs[0]] = n.inputs[0]
        elif n.op == "hadamard" and n.inputs[0].endswith(".rot"):
            renamed[n.inputs[0]] = n.outputs[0]
    nodes: list[Node] = []
    for n in g.nodes:
        ins = [alias.get(i, i) for i in n.inputs]
        if n.op == "hadamard" and (n.outputs[0] in alias or n.inputs[0] in renamed):
            continue
        if n.op in ("kv_write_q", "kv_write_kc"):
            cache, new, pos = ins[0], ins[-2], ins[-1]
            nodes.append(Node("kv_write", [cache, new, pos], n.outputs[:1], {k: v for k, v in n.attrs.items() if k == "block"}))
        elif n.op in ("cache_attention_q", "cache_attention"):
            q, kc, vc, pos = (ins[0], ins[1], ins[3], ins[5]) if n.op == "cache_attention_q" else ins
            out = renamed.get(n.outputs[0], n.outputs[0])
            nodes.append(Node("cache_attention", [q, kc, vc, pos], [out], {k: v for k, v in n.attrs.items() if k not in KV_ATTRS}))
        else:
            nodes.append(Node(n.op, ins, list(n.outputs), dict(n.attrs)))
    g.nodes = nodes
    extra = ("past_key_scale.", "past_value_scale.", "past_key_window.", "past_value_window.")
    for k in [k for k in g.inputs if k.startswith(extra)]:
        del g.inputs[k]
    for k, t in g.inputs.items():
        if k.startswith(("past_key.", "past_value.")):
            g.inputs[k] = TensorType((t.shape[0], t.shape[1], graph.meta["hparams"]["head_dim"]), "f32")
    g.outputs = [o for o in g.outputs if not o.startswith(tuple(e.replace("past_", "present_") for e in extra))]
    g.meta.pop("kv_format")
    g.infer_types()
    g.verify()
    return g
