"""A quantized KV cache: `lowbit compile --kv int8|int4` (llama.cpp's q8_0 / q4_0 cache types, KIVI's per-token values).

The in-place cache (docs/DESIGN.md, KV cache) keeps every row as integer codes with one scale per (row, head,
group of GROUP = 32 along the head dimension), keys and values alike:

    s = fp16(max |x| over the group / qmax),  q = clamp(rint(x / s), -qmax, qmax)   (qmax 127 for int8, 7 for int4)

(s = 0 for an all-zero group, whose codes are 0). int8 codes are stored as i8 [C, H, D]; int4 codes as q + 8
in nibbles, u8 [C, H, D/2], in llama.cpp's q4_0 order: within each group of 32, byte i holds element i in its low
nibble and element i + 16 in its high one (so 16 consecutive bytes give 16 consecutive values without a shuffle);
scales f16 [C, H, D/32]. `kv_write_q` quantizes the new rows into the fed arrays (in place); `cache_attention_q`
reads rows 0..positions[i] as s * q (float32, exact) and is `cache_attention` over them. The pass rewrites a
graph built with the float in-place cache: each layer's past_key.i / past_value.i become the codes, with
past_key_scale.i / past_value_scale.i beside them (and the present_* outputs likewise).
"""

from __future__ import annotations

from compiler.errors import LowbitError
from compiler.ir import Graph, Node, TensorType

GROUP = 32
FORMATS = {"f32": None, "int8": 8, "int4": 4}


def kv_bits(fmt: str) -> int | None:
    if fmt not in FORMATS:
        raise LowbitError(f"unknown KV cache format '{fmt}'", f"use one of {', '.join(FORMATS)}")
    return FORMATS[fmt]


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, fmt: str) -> float:
    """Bytes of K and V per token over all layers: codes plus a 2-byte (fp16) scale per group of 32."""
    bits = kv_bits(fmt)
    per = head_dim * 4 if bits is None else head_dim * bits / 8 + head_dim // GROUP * 2
    return 2.0 * layers * kv_heads * per


def kv_quant_graph(graph: Graph, fmt: str) -> Graph:
    """A copy of graph whose in-place KV cache is stored in `fmt` (module doc); f32 returns graph as it is."""
    bits = kv_bits(fmt)
    if bits is None:
        return graph
    if not graph.meta.get("causal"):
        raise LowbitError(f"--kv {fmt}: model {graph.name} has no KV cache (an encoder)", "drop --kv")
    if graph.meta.get("kv") != "inplace":
        raise LowbitError(f"--kv {fmt} needs the in-place KV cache, and this graph concatenates its cache (LOWBIT_KV_CACHE=concat)",
                          "unset LOWBIT_KV_CACHE (the in-place form is the default)")
    d = graph.meta["hparams"]["head_dim"]
    if d % GROUP:
        raise LowbitError(f"--kv {fmt}: head_dim {d} is not a multiple of the cache's group of {GROUP}", "use --kv f32 for this model")
    g = graph.copy()
    attrs = {"bits": bits, "group": GROUP}
    nodes: list[Node] = []
    for n in g.nodes:
        if n.op == "kv_write":
            cache, new, pos = n.inputs
            t = g.inputs[cache]
            rows, heads = t.shape[0], t.shape[1]
            g.inputs[cache] = TensorType((rows, heads, d if bits == 8 else d // 2), "i8" if bits == 8 else "u8")
            sname = cache.replace("past_key.", "past_key_scale.").replace("past_value.", "past_value_scale.")
            g.inputs[sname] = TensorType((rows, heads, d // GROUP), "f16")
            out = n.outputs[0]
            sout = out.replace("present_key.", "present_key_scale.").replace("present_value.", "present_value_scale.")
            nodes.append(Node("kv_write_q", [cache, sname, new, pos], [out, sout], {**attrs, **{k: v for k, v in n.attrs.items() if k == "block"}}))
        elif n.op == "cache_attention":
            q, kc, vc, pos = n.inputs
            ks = kc.replace("present_key.", "present_key_scale.")
            vs = vc.replace("present_value.", "present_value_scale.")
            nodes.append(Node("cache_attention_q", [q, kc, ks, vc, vs, pos], list(n.outputs), {**n.attrs, **attrs}))
        else:
            nodes.append(n)
    g.nodes = nodes
    outs = []
    for o in g.outputs:
        outs.append(o)
        if o.startswith(("present_key.", "present_value.")):
            outs.append(o.replace("present_key.", "present_key_scale.").replace("present_value.", "present_value_scale."))
    g.outputs = outs
    g.meta["kv_format"] = fmt
    g.infer_types()
    g.verify()
    return g
