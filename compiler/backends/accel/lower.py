"""Lowering of a quantized Graph onto one accelerator design (hwsim.designs): tiling, weight re-layout,
dyadic scales, and the command stream. See README.md in this folder for the format.

Tiling. A layer y[S, n] = x[S, k] W[n, k]^T runs as array jobs of M rows x N columns x the whole K (cut
into splits of 2^guard_bits groups only beyond the epilogue's exact range; partial Y of splits are summed
in the output buffer, exactly). Column tiles of N output channels (the last one padded with zero weights
and zero scales, which give Y = 0); row tiles of M activation rows (decided at run time by ROW_LOOP; the
last one padded with zero rows). Order: weight-stationary, as hwsim.memory models it: each column block is
loaded once (when it fits half of the weight SRAM; LOAD_W says `resident`) and every row tile streams past
it. SRAM sizes: hwsim.memory.MemoryConfig (defaults, or --array weight_sram_kib=..,act_sram_kib=..).

Table precompute (designs with `precompute_tables`, lut-tc). The symmetric tables T8 depend only on the activations, so they are built once
per activation tensor, right after the node that produces it (fused into that producer), and shared by
every layer reading the tensor (q/k/v read one, gate/up another): PRECOMPUTE_TABLE follows the producer's
HOST_OP and QUANT_ACT, not each layer.
"""

from __future__ import annotations

import numpy as np

from compiler.errors import LowbitError
from compiler.ir import Graph
from compiler.quant.floatfmt import E2M1_FORMATS  # (the arrays run E2M1 codes exactly: ArrayConfig weight_format "e2m1")
from compiler.quant.pack import pack, unpack
from hwsim import golden
from hwsim.config import ArrayConfig
from hwsim.designs import DESIGNS

from compiler.backends.accel.program import Command, LayerPlan, Program

ARRAY_KEYS = ("M", "N", "K", "lanes", "mant_bits", "shift_bits", "bfp_bits", "guard_bits")
MEMORY_KEYS = ("weight_sram_kib", "act_sram_kib", "out_sram_kib")  # hwsim.memory.MemoryConfig fields

def memory_config(array: dict):
    """hwsim.memory.MemoryConfig with the --array overrides (weight_sram_kib, act_sram_kib, out_sram_kib)."""
    from hwsim.memory import MemoryConfig

    return MemoryConfig(**{k: v for k, v in array.items() if k in MEMORY_KEYS})


def parse_array(text: str | dict | None) -> dict:
    """`M=4,N=64,K=4[,lanes=8,wsram_kib=64,...]` -> dict of ints (LowbitError on bad items)."""
    if text is None:
        return {}
    if isinstance(text, dict):
        items = list(text.items())
    else:
        items = []
        for it in str(text).split(","):
            if not it.strip():
                continue
            if "=" not in it:
                raise LowbitError(f"--array item '{it}' is not KEY=VALUE", "write e.g. --array M=4,N=64,K=4")
            k, v = it.split("=", 1)
            items.append((k.strip(), v.strip()))
    out = {}
    for k, v in items:
        if k not in ARRAY_KEYS + MEMORY_KEYS:
            raise LowbitError(f"unknown --array key '{k}'", f"use {', '.join(ARRAY_KEYS + MEMORY_KEYS)}")
        try:
            iv = int(v)
        except (TypeError, ValueError):
            raise LowbitError(f"--array {k}={v!r} is not an integer", f"give {k} as a whole number") from None
        if iv < 1:
            raise LowbitError(f"--array {k}={iv} must be positive", f"give {k} >= 1")
        out[k] = iv
    return out


def layer_config(design: str, array: dict, attrs: dict, what: str) -> ArrayConfig:
    """The ArrayConfig of one qlinear on `design`; LowbitError naming the fix when the array cannot run it.
    what: the layer or spec named in the message ("layer l0.q", "quant spec 'w8g128'")."""
    bits, group, act, tern = int(attrs["bits"]), int(attrs["group_size"]), attrs["act"], bool(attrs.get("ternary"))
    fp = attrs.get("fp", "") if attrs.get("codebook") else ""
    if attrs.get("codebook") and fp not in E2M1_FORMATS:
        raise LowbitError(f"target {design} multiplies integer codes, and {what} holds codebook weights (codes that index a float table)",
                          "compile those layers with a group spec such as w3g32, or mxfp4 / nvfp4, for the accelerators")
    if act not in ("a8", "a16"):  # the arrays take int8 activations, or A16 ones as block floating point
        raise LowbitError(f"{what} has {act} activations; the {design} array takes a8 or a16 (block floating point)",
                          "compile with --act a16 or --act a8")
    if bits > 4:
        raise LowbitError(
            f"{what} has {bits}-bit weights; the {design} array takes 1..4-bit codes (W4/W3/W2/ternary)",
            f"compile with --quant w4g128 (or w3/w2/ternary), or use --target ref/tvm-cpu for W{bits}",
        )
    rec = DESIGNS[design]
    base = {**rec.default_array, **{k: v for k, v in array.items() if k in ARRAY_KEYS}}
    if group % base["K"]:
        raise LowbitError(
            f"{what}: weight group {group} is not a multiple of the {design} array's K={base['K']} features per beat",
            f"choose --array K= dividing {group} (e.g. K=4) or a group size that is a multiple of {base['K']}",
        )
    try:
        return ArrayConfig(design=design, bits=bits, ternary=tern, act=act, group=group, weight_format="e2m1" if fp else "int", **base)
    except ValueError as e:
        raise LowbitError(f"{what} does not fit the {design} array ({e})", f"change --array (N a multiple of lanes, K >= {rec.min_k}) or the quant spec") from None


def storage_bits(design: str, bits: int) -> tuple[int, str]:
    """(bits per stored code, compiler.quant.pack layout) of the re-laid-out weights."""
    if DESIGNS[design].weight_layout == "planes":
        return bits, "planes"
    if bits == 1:
        return 1, "planes"  # one plane == 1-bit dense
    if bits == 3:
        return 4, "nibble"  # 3-bit codes in 4-bit containers (the array's in_w port takes B bits; the loader drops the pad bit)
    return bits, "dense"


def beats_of_codes(codes: np.ndarray, K: int) -> np.ndarray:
    """codes [N, KT] -> [KT/K, N*K]: row c = the in_w port of beat c (code q[n, cK+t] at slot n*K + t)."""
    n, kt = codes.shape
    return codes.reshape(n, kt // K, K).transpose(1, 0, 2).reshape(kt // K, n * K)


def codes_of_beats(beats: np.ndarray, n: int, K: int) -> np.ndarray:
    nch = beats.shape[0]
    return beats.reshape(nch, n, K).transpose(1, 0, 2).reshape(n, nch * K)


def relayout_tile(design: str, codes: np.ndarray, bits: int, K: int) -> np.ndarray:
    """One weight tile's codes [N, KT] -> bytes in the order the array reads them (README.md)."""
    beats = np.ascontiguousarray(beats_of_codes(codes.astype(np.uint8), K))
    sb, layout = storage_bits(design, bits)
    if DESIGNS[design].weight_layout == "planes":
        planes = pack(beats, bits, "planes")  # [B, nch, ceil(N*K/8)]
        return np.ascontiguousarray(planes.transpose(1, 0, 2)).reshape(-1)  # beat-major, then plane
    return pack(beats, sb, layout).reshape(-1)


def decode_tile(design: str, blob: np.ndarray, bits: int, n: int, kt: int, K: int) -> np.ndarray:
    """Inverse of relayout_tile: bytes -> codes uint8 [n, kt]."""
    nch, w = kt // K, n * K
    sb, layout = storage_bits(design, bits)
    if DESIGNS[design].weight_layout == "planes":
        per = -(-w // 8)
        planes = blob.reshape(nch, bits, per).transpose(1, 0, 2)
        beats = unpack(np.ascontiguousarray(planes), bits, "planes", w)
    else:
        if layout == "planes":  # 1-bit codes: one plane
            beats = unpack(blob.reshape(1, nch, -(-w // 8)), 1, "planes", w)
        else:
            beats = unpack(blob.reshape(nch, -(-w * sb // 8)), sb, layout, w)
    return codes_of_beats(beats, n, K)


def _qweight(graph: Graph, node):
    """(codes uint8 [n, k], scales, zeros uint8, minimums float32 or None, bias name) of a qlinear node;
    scale-and-minimum groups (attr mins) have zero points 0."""
    a = node.attrs
    c = graph.consts
    codes = unpack(c[node.inputs[1]], a["bits"], a["layout"], a["k"])
    bias = node.inputs[4] if len(node.inputs) == 5 else None
    scales = c[node.inputs[2]]
    if a.get("codebook"):  # E2M1 codes (layer_config refused other tables): the array decodes them itself
        table = np.asarray(c[node.inputs[3]], np.float32).reshape(-1)
        if table.size != 16 or not np.array_equal(2 * table, golden.E2M1_W2.astype(np.float32)):
            w = node.inputs[1].removesuffix(".qweight")
            raise LowbitError(f"layer {w} says {a.get('fp')} but its table is not the E2M1 decoding", "re-quantize the model with --quant mxfp4 or nvfp4")
        return codes, scales, np.zeros(scales.shape, np.uint8), None, bias
    if a.get("mins"):
        return codes, scales, np.zeros(scales.shape, np.uint8), np.asarray(c[node.inputs[3]], np.float32), bias
    return codes, scales, c[node.inputs[3]], None, bias


def min_field_bits(cfg: ArrayConfig) -> int:
    """Bits per column and group of the minimum fields (mm signed MW+1, dm SW; hwsim/golden.py 4b)."""
    return cfg.mant_bits + 1 + cfg.shift_bits


def k_splits(cfg: ArrayConfig, k: int, mins: bool = False) -> list[list[int]]:
    """Group-aligned K ranges, one array job each: the whole K (the array streams any number of groups;
    hwsim.memory models the SRAM double buffering as DRAM stalls), cut only where Y would exceed its
    exact groups (2^guard_bits, half that with minimums: golden.exact_groups)."""
    g = cfg.group
    ng = k // g
    per = golden.exact_groups(cfg, mins)
    return [[j * g, min(ng, j + per) * g] for j in range(0, ng, per)]


def weight_resident(cfg: ArrayConfig, k: int, mem, mins: bool = False) -> bool:
    """A column block's codes and fields fit one half of the weight SRAM (loaded once, reused by every
    row tile), as hwsim.memory's model decides (hwsim.arrays counts the minimum fields the same way)."""
    ng = k // cfg.group
    fb = cfg.zero_bits + cfg.mant_bits + cfg.shift_bits + (min_field_bits(cfg) if mins else 0)
    block = (cfg.N * k * cfg.bits + cfg.N * ng * fb) / 8
    return block <= mem.weight_sram_kib * 1024 / (2 if mem.double_buffer else 1)


def lower_graph(graph: Graph, design: str, array: dict | None = None, vector_units=(), calib_feeds=None) -> tuple[Program, dict[str, np.ndarray]]:
    """Graph -> (Program, tensors for <design>/weights.safetensors). vector_units: the units of
    compiler.backends.accel.vector that take their ops off the host (scales from `calib_feeds`)."""
    from compiler.backends.accel import vector

    array = parse_array(array)
    mem = memory_config(array)
    qnodes = [i for i, nd in enumerate(graph.nodes) if nd.op == "qlinear"]
    if not qnodes:
        raise LowbitError(f"target {design} needs quantized weights, and this model has no quantized linear layer", "compile with --quant, e.g. --quant w4g128a8")
    cb = [graph.nodes[i].inputs[1] for i in qnodes if graph.nodes[i].attrs.get("codebook") and graph.nodes[i].attrs.get("fp") not in E2M1_FORMATS]
    if cb:
        raise LowbitError(f"target {design} multiplies integer codes, and layer {cb[0]} holds codebook weights (codes that index a float table)",
                          "compile those layers with a group spec such as w3g32, or mxfp4 / nvfp4, for the accelerators")
    cfgs = {i: layer_config(design, array, graph.nodes[i].attrs, f"layer {graph.nodes[i].outputs[0]}") for i in qnodes}
    base = cfgs[qnodes[0]]
    consumers: dict[str, list[int]] = {}
    for i in qnodes:
        consumers.setdefault(graph.nodes[i].inputs[0], []).append(i)
    producer_of = {o: i for i, nd in enumerate(graph.nodes) for o in nd.outputs}

    tensors: dict[str, np.ndarray] = {}
    layers: dict[str, LayerPlan] = {}
    cmds: list[Command] = []
    weight_bytes = 0
    vec_cmds: dict[int, list[Command]] = {}
    if vector_units:
        vnodes = vector.vector_nodes(graph, vector_units)
        if calib_feeds is None:
            raise LowbitError(f"--vector-unit on target {design} needs calibration inputs for its static scales", "compile through `lowbit compile` (it passes them)")
        vec_cmds = vector.lower_vector(graph, vnodes, vector.calibrate(graph, calib_feeds, vnodes), tensors)

    def from_vector(tensor: str) -> bool:
        """The tensor is a vector-unit output (or a reshape of one): its int8 codes go to the array as they are."""
        i = producer_of.get(tensor)
        while i is not None and graph.nodes[i].op in vector.PASS_THROUGH:
            i = producer_of.get(graph.nodes[i].inputs[0])
        return i in vec_cmds and vector.CODE_BITS.get(vector.unit_of(vnodes[i]), 8) == 8

    def act_prep(tensor: str, producer: str):
        idx = consumers[tensor]
        c0 = cfgs[idx[0]]
        users = [graph.nodes[i].outputs[0] for i in idx]
        if any(cfgs[i].act != c0.act or cfgs[i].group != c0.group for i in idx):
            raise LowbitError(f"layers {users} read one activation with different act modes or groups", "use one quant spec for the model")
        fv = {"from_vector": True} if c0.act == "a8" and from_vector(tensor) else {}
        cmds.append(Command("QUANT_ACT", tensor, {"act": c0.act, "group": c0.group, "bits": c0.act_bits, "fused_into": producer, "consumers": users, **fv}))
        if DESIGNS[design].precompute_tables:
            cmds.append(Command("PRECOMPUTE_TABLE", tensor, {"K": c0.K, "entries": 1 << (c0.K - 1), "entry_bits": c0.table_bits, "fused_into": producer, "consumers": users}))

    for t in consumers:  # activations that come straight from a graph input
        if t not in producer_of:
            act_prep(t, "input")
    for i, nd in enumerate(graph.nodes):
        if i in vec_cmds:
            cmds.extend(vec_cmds[i])
        elif nd.op != "qlinear":
            cmds.append(Command("HOST_OP", nd.outputs[0], {"index": i, "kernel": nd.op}))
        else:
            weight_bytes += _lower_layer(graph, i, cfgs[i], mem, design, layers, tensors, cmds)
        for o in nd.outputs:
            if o in consumers:
                act_prep(o, nd.outputs[0])
    prog = Program(
        design=design,
        array=base.to_dict(),
        memory=mem.to_dict(),
        layers=layers,
        commands=cmds,
        stats={
            "layers": len(layers),
            "weight_tiles": sum(p.n_tiles * len(p.k_splits) for p in layers.values()),
            "weight_bytes": int(weight_bytes),
            "host_ops": sum(c.op == "HOST_OP" for c in cmds),
            "tables": sum(c.op == "PRECOMPUTE_TABLE" for c in cmds),
            "min_layers": sum(p.mins for p in layers.values()),
            **({"vector_units": list(vector_units), "vector_ops": sum(c.op.startswith("VEC_") for c in cmds)} if vector_units else {}),
        },
    )
    return prog, tensors


def _lower_layer(graph, i, cfg: ArrayConfig, mem, design, layers, tensors, cmds) -> int:
    nd = graph.nodes[i]
    name = nd.outputs[0]
    codes, scales, zeros, mins, bias = _qweight(graph, nd)
    has_mins = mins is not None
    n, k = codes.shape
    if np.any(scales < 0):  # the dyadic epilogue's mantissas are unsigned (hwsim/golden.py section 4)
        w = nd.inputs[1].removesuffix(".qweight")
        raise LowbitError(f"layer {w} has {int((scales < 0).sum())} negative group scales (kept from the checkpoint, e.g. GGUF Q4_0 / Q3_K / Q6_K), "
                          f"which the {design} array's dyadic scales cannot hold",
                          "re-quantize for the accelerator (--quant w4g32a8, or --quant-layer for that layer), or use --target ref,tvm-cpu")
    N, g = cfg.N, cfg.group
    n_tiles = -(-n // N)
    n_pad = n_tiles * N
    if has_mins:
        mant, d, mm, dm, E = golden.dyadic_affine(scales, mins, cfg.mant_bits, cfg.shift_bits)
    else:
        mant, d, E = golden.dyadic_scales(golden.epilogue_scales(cfg, scales), cfg.mant_bits, cfg.shift_bits)
    pad = n_pad - n

    def padded(x, dt):
        return np.concatenate([x, np.zeros((pad,) + x.shape[1:], dt)]).astype(dt) if pad else x.astype(dt)

    codes_p = padded(codes, np.uint8)
    zeros_p = padded(zeros, np.uint8)
    mant = padded(mant, np.int64)
    d = padded(d, np.int64)
    splits = k_splits(cfg, k, has_mins)
    resident = weight_resident(cfg, k, mem, has_mins)
    blobs, offsets, sizes, off = [], [], [], 0
    for nt in range(n_tiles):
        row_o, row_s = [], []
        for k0, k1 in splits:
            b = relayout_tile(design, codes_p[nt * N : (nt + 1) * N, k0:k1], cfg.bits, cfg.K)
            blobs.append(b)
            row_o.append(off)
            row_s.append(int(b.size))
            off += int(b.size)
        offsets.append(row_o)
        sizes.append(row_s)
    tensors[f"{name}.w"] = np.concatenate(blobs).astype(np.uint8)
    tensors[f"{name}.zeros"] = zeros_p.astype(np.uint8)
    tensors[f"{name}.mant"] = mant.astype(np.int64)
    tensors[f"{name}.d"] = d.astype(np.uint8)
    tensors[f"{name}.E"] = E.astype(np.int64)
    if has_mins:
        tensors[f"{name}.mm"] = padded(mm, np.int64)
        tensors[f"{name}.dm"] = padded(dm, np.uint8)
    sb, layout = storage_bits(design, cfg.bits)
    plan = LayerPlan(
        node=name,
        index=i,
        input=nd.inputs[0],
        n=n,
        k=k,
        cfg=cfg.to_dict(),
        n_pad=n_pad,
        n_tiles=n_tiles,
        k_splits=splits,
        tile_offsets=offsets,
        tile_bytes=sizes,
        weight_layout="planes-beats" if DESIGNS[design].weight_layout == "planes" else f"{layout}-beats",
        storage_bits=sb,
        bias=bias,
        mins=has_mins,
    )
    layers[name] = plan
    mma = DESIGNS[design].mma_op
    cmds.append(Command("LAYER", name, {"input": nd.inputs[0], "n": n, "k": k, "row_tile": cfg.M, "n_tiles": n_tiles, "k_splits": len(splits)}))
    scale_bits = cfg.zero_bits + cfg.mant_bits + cfg.shift_bits + (min_field_bits(cfg) if has_mins else 0)
    dq = {"mant_bits": cfg.mant_bits, "shift_bits": cfg.shift_bits, **({"mins": True} if has_mins else {})}
    for nt in range(n_tiles):
        for ks, (k0, k1) in enumerate(splits):
            j0, j1 = k0 // g, k1 // g
            cmds.append(Command("LOAD_W", name, {"tile": [nt, ks], "n": [nt * N, (nt + 1) * N], "k": [k0, k1], "offset": offsets[nt][ks], "bytes": sizes[nt][ks], "resident": resident}))
            cmds.append(Command("LOAD_SCALES", name, {"tile": [nt, ks], "groups": [j0, j1], "bytes": -(-N * (j1 - j0) * scale_bits // 8)}))
            cmds.append(Command("ROW_LOOP", name, {"rows": cfg.M, "body": 4}))
            cmds.append(Command("LOAD_A", name, {"tensor": nd.inputs[0], "k": [k0, k1], "bytes_per_row": -(-((k1 - k0) * cfg.act_bits + ((j1 - j0) * cfg.shift_bits if cfg.act == "a16" else 0)) // 8)}))
            cmds.append(Command(mma, name, {"tile": [nt, ks], "groups": j1 - j0, "beats": (k1 - k0) // cfg.K, "cycles_per_beat": cfg.cycles_per_beat}))
            cmds.append(Command("DEQUANT", name, {"tile": [nt, ks], "groups": j1 - j0, **dq}))
            cmds.append(Command("STORE", name, {"tile": [nt, ks], "n": [nt * N, (nt + 1) * N], "accumulate": ks > 0}))
    cmds.append(Command("SCALE_OUT", name, {"n": n, "bias": bias, "y_bits": cfg.y_bits}))
    return int(tensors[f"{name}.w"].size)
