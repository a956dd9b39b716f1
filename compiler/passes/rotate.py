"""Rotation before quantization (QuaRot, Ashkboos et al. 2024; SpinQuant's fixed-rotation baseline): an exact
float rewrite of a pre-norm RMSNorm decoder that spreads the outlier channels of the residual stream and of
the FFN's inner activations over all channels, so per-group weight grids and per-token activation grids
stop spending their range on a few channels.

1. Each RMSNorm that reads the residual stream has its gain folded into the linears that read it
   (W[:, j] * gamma_j) and set to 1: a gainless RMSNorm commutes with any orthogonal Q (||x Q|| = ||x||).
2. The residual stream is rotated by one orthogonal Q (compiler.passes.hadamard.rotation: a randomized
   Hadamard matrix of the model width): the embedding table becomes E Q; every linear reading a norm of
   the stream W Q; every linear whose output is added into the stream Q^T W (and its bias b Q). A tied LM
   head gets its own copy of the table (the embedding's E Q and the head's W diag(gamma) Q differ).
3. Attention values and outputs, per head: V = x W_v^T is rotated by H_d in each head (W_v's rows), and
   W_o's columns by the same H_d, which cancels after attention (it mixes positions, never channels).
   Offline and exact; the cached values are rotated too, which also helps a quantized KV cache.
4. Online: the input of each FFN down projection goes through the `hadamard` op (the block Walsh-Hadamard
   transform, blocks of the width's largest power-of-two divisor), a random sign per channel folded into
   the up projection's rows, and the down projection's columns rotated to match (W_d D H).

The rotated weights are float32 products (BLAS) of the float32 weights and the rotation rounded to float32: the
rotated float graph computes what the original did to float32 rounding (the logits' difference is within 1e-5 of
their norm; on SmolLM2-135M 6e-6, where a one-ulp perturbation of the original weights moves them by 1.4e-5). Models this does not fit (LayerNorm,
post-norm encoders, gains applied outside the norm) are refused with one line, before any work."""

from __future__ import annotations

import numpy as np

from compiler.errors import LowbitError
from compiler.ir import Graph, Node
from compiler.passes.hadamard import online_block, rotation, sylvester

METHODS = ("none", "hadamard")
DTYPE = np.float32  # float64 products cost 3x the time for no gain: the results are stored in float32


def _producers(g: Graph) -> dict[str, int]:
    return {o: i for i, n in enumerate(g.nodes) for o in n.outputs}


def _readers(g: Graph) -> dict[str, list[int]]:
    r: dict[str, list[int]] = {}
    for i, n in enumerate(g.nodes):
        for v in n.inputs:
            r.setdefault(v, []).append(i)
    return r


class _Refused(Exception):
    pass


def _stream(g: Graph) -> tuple[int, list[int], list[int], list[int]]:
    """(embedding node, norms reading the stream, linears writing into it, linears reading its norms) of a
    pre-norm decoder; _Refused(reason) when the graph is not one."""
    prod, readers = _producers(g), _readers(g)
    emb = [i for i, n in enumerate(g.nodes) if n.op == "embedding"]
    if len(emb) != 1:
        raise _Refused("it has no float token embedding" if not emb else "it has more than one embedding")
    todo, seen = [g.nodes[emb[0]].outputs[0]], set()
    norms, writers = [], []
    while todo:
        v = todo.pop()
        if v in seen:
            continue
        seen.add(v)
        if v in g.outputs:
            raise _Refused(f"its residual stream value {v} is a graph output")
        for i in readers.get(v, []):
            n = g.nodes[i]
            if n.op == "rmsnorm" and n.inputs[0] == v and len(n.inputs) == 2:
                norms.append(i)
            elif n.op == "add" and len(n.inputs) == 2:
                other = n.inputs[1] if n.inputs[0] == v else n.inputs[0]
                if other not in seen:
                    p = prod.get(other)
                    if p is None or g.nodes[p].op != "linear" or readers.get(other) != [i] or other in g.outputs:
                        raise _Refused(f"{other}, added to its residual stream, is not a linear's output read only there")
                    writers.append(p)
                todo.append(n.outputs[0])
            else:
                raise _Refused(f"its residual stream value {v} is read by a {n.op} node (only rmsnorm and add are rotated through)")
    readers_of_norms = []
    for i in norms:
        y = g.nodes[i].outputs[0]
        for j in readers.get(y, []):
            n = g.nodes[j]
            if n.op != "linear" or n.inputs[0] != y:
                raise _Refused(f"the norm output {y} is read by a {n.op} node, not only by linears")
            readers_of_norms.append(j)
        if y in g.outputs:
            raise _Refused(f"the norm output {y} is a graph output")
    return emb[0], sorted(set(norms)), sorted(set(writers)), sorted(set(readers_of_norms))


def check_rotatable(graph: Graph, name: str) -> None:
    """LowbitError naming the model and the reason when `rotate_graph` cannot rewrite it."""
    try:
        _stream(graph)
    except _Refused as e:
        raise LowbitError(f"--rotate hadamard: model {name} is not a pre-norm RMSNorm decoder the rotation is exact on ({e})",
                          "drop --rotate (it supports Llama-family decoders: Llama, Qwen2, SmolLM, Mistral)") from None


def _value_heads(g: Graph) -> list[tuple[int, int, int]]:
    """(v linear, o linear, head dim) for each attention whose values come from a linear (through a reshape
    and the cache write) and whose output reaches a linear (through a reshape): the per-head rotation sites."""
    prod, readers = _producers(g), _readers(g)

    def through(v, ops):  # follow single producers through ops
        while v in prod and g.nodes[prod[v]].op in ops:
            n = g.nodes[prod[v]]
            v = n.inputs[1] if n.op == "kv_write" else n.inputs[0]
        return prod.get(v)

    sites = []
    for i, n in enumerate(g.nodes):
        if n.op not in ("cache_attention", "attention") or len(n.inputs) < 3:
            continue
        vlin = through(n.inputs[2], ("reshape", "kv_write"))
        out = n.outputs[0]
        r = readers.get(out, [])
        if vlin is None or g.nodes[vlin].op != "linear" or len(r) != 1 or g.nodes[r[0]].op != "reshape":
            continue
        r2 = readers.get(g.nodes[r[0]].outputs[0], [])
        if len(r2) != 1 or g.nodes[r2[0]].op != "linear" or out in g.outputs:
            continue
        vshape = g.types[n.inputs[2]].shape
        d = vshape[-1]
        if not isinstance(d, int) or d & (d - 1) or readers.get(g.nodes[vlin].outputs[0]) is None:
            continue
        if any(g.nodes[j].op != "reshape" for j in readers[g.nodes[vlin].outputs[0]]):
            continue
        sites.append((vlin, r2[0], d))
    return sites


def _ffn_downs(g: Graph) -> list[tuple[int, int, int]]:
    """(up linear, mul node, down linear) of each gated FFN: down reads mul(act(gate), up) and nothing else
    reads the product or up."""
    prod, readers = _producers(g), _readers(g)
    sites = []
    for i, n in enumerate(g.nodes):
        if n.op != "linear" or not n.attrs.get("quantize"):
            continue
        p = prod.get(n.inputs[0])
        if p is None or g.nodes[p].op != "mul" or readers.get(n.inputs[0]) != [i]:
            continue
        ups = [prod.get(v) for v in g.nodes[p].inputs]
        ups = [u for u in ups if u is not None and g.nodes[u].op == "linear" and readers.get(g.nodes[u].outputs[0]) == [p]]
        if len(ups) >= 1 and online_block(g.types[n.inputs[0]].shape[-1]) >= 2:
            sites.append((ups[-1], p, i))
    return sites


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32)


def rotate_graph(graph: Graph, seed: int = 0) -> tuple[Graph, dict]:
    """(a rotated copy of graph, a summary for the artifact); see the module doc. The copy computes the same
    function to float32 rounding; `graph` is not modified. Raises LowbitError when the model does not fit."""
    check_rotatable(graph, graph.name)
    emb, norms, writers, reads = _stream(graph)
    g = graph.copy()
    readers = _readers(g)
    table_name = g.nodes[emb].inputs[1]
    width = g.consts[table_name].shape[1]
    q, kind = rotation(width, seed)
    q = q.astype(DTYPE)

    def w64(name):
        return np.asarray(g.consts[name], DTYPE)

    gains = {g.nodes[i].outputs[0]: w64(g.nodes[i].inputs[1]) for i in norms}
    for i in norms:
        gname = g.nodes[i].inputs[1]
        if len(readers[gname]) > 1:  # a gain shared between norms: each gets its own (all ones)
            gname = g.add_const(f"{g.nodes[i].outputs[0]}.gain", np.ones(width, np.float32))
            g.nodes[i].inputs[1] = gname
        else:
            g.consts[gname] = np.ones(width, np.float32)
    # a weight read by more than one rotated site (a tied LM head) gets its own copy per site
    new_weights: dict[str, np.ndarray] = {table_name: w64(table_name) @ q}
    for j in reads:
        n = g.nodes[j]
        w = w64(n.inputs[1]) * gains[n.inputs[0]][None, :] @ q
        name = n.inputs[1]
        if name in new_weights:
            name = g.add_const("lm_head.weight" if "logits" in n.outputs and "lm_head.weight" not in g.consts else f"{n.outputs[0]}.weight", g.consts[name])
            n.inputs[1] = name
        new_weights[name] = w
    for j in writers:
        n = g.nodes[j]
        new_weights[n.inputs[1]] = q.T @ w64(n.inputs[1])
        if len(n.inputs) == 3:
            new_weights[n.inputs[2]] = w64(n.inputs[2]) @ q
    heads = _value_heads(g)
    for v, o, d in heads:
        b = (sylvester(d) / np.sqrt(d)).astype(DTYPE)
        vn, on = g.nodes[v], g.nodes[o]
        for name, side in ((vn.inputs[1], "rows"), (on.inputs[1], "cols")):
            w = new_weights.get(name, w64(name))
            if side == "rows":  # V' = V blockdiag(B): W_v' = blockdiag(B)^T W_v (B symmetric)
                new_weights[name] = (b @ w.reshape(-1, d, w.shape[1])).reshape(w.shape)
            else:
                new_weights[name] = (w.reshape(w.shape[0], -1, d) @ b).reshape(w.shape)
        if len(vn.inputs) == 3:
            bias = new_weights.get(vn.inputs[2], w64(vn.inputs[2]))
            new_weights[vn.inputs[2]] = (bias.reshape(-1, d) @ b).reshape(-1)
    rng = np.random.default_rng(seed + 1)
    inserts = []
    for up, mul, down in _ffn_downs(g):
        x = g.nodes[down].inputs[0]
        f = g.types[x].shape[-1]
        blk = online_block(f)
        signs = rng.choice(np.array([-1.0, 1.0], DTYPE), size=f)
        un, dn = g.nodes[up], g.nodes[down]
        new_weights[un.inputs[1]] = signs[:, None] * new_weights.get(un.inputs[1], w64(un.inputs[1]))
        if len(un.inputs) == 3:
            new_weights[un.inputs[2]] = signs * new_weights.get(un.inputs[2], w64(un.inputs[2]))
        h = (sylvester(blk) / np.sqrt(blk)).astype(DTYPE)
        wd = new_weights.get(dn.inputs[1], w64(dn.inputs[1])) * signs[None, :]
        new_weights[dn.inputs[1]] = (wd.reshape(wd.shape[0], -1, blk) @ h).reshape(wd.shape)
        rot = f"{x}.rotated"  # not ".had": kv_quant.float_cache_graph reads that suffix as its own
        inserts.append((down, Node("hadamard", [x], [rot], {"size": blk, **({"block": dn.attrs["block"]} if "block" in dn.attrs else {})})))
        dn.inputs[0] = rot
    for name, w in new_weights.items():
        g.consts[name] = _f32(w)
    for p, node in sorted(inserts, key=lambda t: -t[0]):
        g.nodes.insert(p, node)
    g.infer_types()
    g.verify()
    info = {"method": "hadamard", "residual": kind, "width": width, "seed": seed, "norms_folded": len(norms),
            "value_heads": len(heads), "online": len(inserts)}
    return g, info
