"""The accelerator integer reference: runs an accelerator program (program.json + weights.safetensors) with
hwsim.golden.tile_y, one array job at a time, exactly as the command stream orders them; host ops run in
numpy through compiler.reference's kernels.

`ProgramExecutor` walks the commands; `run_layer` is the hook the runtime backends override (hwsim runs a
whole layer through the cycle-level simulator; rtl through the cocotb testbench). Every path produces the
integer output Y of each layer, and SCALE_OUT turns Y into floats the same way for all of them, so two
backends agree bit for bit exactly when their integer Y agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.backends.accel.lower import decode_tile
from compiler.backends.accel.program import Command, LayerPlan, Program
from compiler.backends.accel.vector import PASS_THROUGH, VectorRunner
from compiler.reference import KERNELS, QLinearWeights
from hwsim import golden
from hwsim.config import ArrayConfig
from hwsim.designs import DESIGNS


@dataclass
class ActInputs:
    """One activation tensor in the array's integer format (QUANT_ACT), shared by all its consumers."""

    a: np.ndarray  # [S, K] int64 (int8 values, or BFP mantissas)
    da: np.ndarray  # [S, NG] int64 BFP exponent offsets (0 for A8)
    row_scale: np.ndarray  # [S] float64: sa (A8) or 2^(EA - (AB-1)) (A16)
    tables: np.ndarray | None = None  # designs with precompute_tables: [S, K/Kc, 2^(Kc-1)] symmetric tables (PRECOMPUTE_TABLE)


def quantize_act(x: np.ndarray, act: str, group: int, bfp_bits: int, shift_bits: int) -> ActInputs:
    """Float activations [S, K] -> the array's integers, as hwsim.golden.prepare_tile does."""
    x = np.asarray(x, np.float32).reshape(-1, x.shape[-1])
    if act == "a8":
        a, sa = golden.quantize_a8(x)
        return ActInputs(a, np.zeros((x.shape[0], x.shape[1] // group), np.int64), sa.astype(np.float64))
    a, da, EA = golden.bfp_quantize(x.astype(np.float16).astype(np.float64), group, bfp_bits, shift_bits)
    return ActInputs(a, da, np.ldexp(1.0, EA - (bfp_bits - 1)))


def vector_act(codes: np.ndarray, scale, group: int) -> ActInputs:
    """A vector-unit output as the array's A8 activations: its int8 codes, row scale its scale (per tensor or per row)."""
    a = np.asarray(codes, np.int64).reshape(-1, np.shape(codes)[-1])
    rs = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (a.shape[0],)).copy()
    return ActInputs(a, np.zeros((a.shape[0], a.shape[1] // group), np.int64), rs)


@dataclass
class LayerWeights:
    """A layer's weights decoded from the re-laid-out blob (whole layer, padded to the array's N)."""

    codes: np.ndarray  # [n_pad, k] int64
    zeros: np.ndarray  # [n_pad, NG] int64
    mant: np.ndarray
    d: np.ndarray
    E: np.ndarray  # [n] channel exponents
    mm: np.ndarray | None = None  # [n_pad, NG] signed minimum mantissas (scale-and-minimum layers)
    dm: np.ndarray | None = None  # [n_pad, NG] their shifts


class ProgramExecutor:
    """Runs a Program on feeds; subclasses replace `run_layer` (and may read `self.records`)."""

    name = "accel-reference"

    def __init__(self, graph, program: Program, tensors: dict[str, np.ndarray]):
        self.graph = graph
        self.prog = program
        self.tensors = tensors
        self._weights: dict[str, LayerWeights] = {}
        self._tiles: dict[tuple, np.ndarray] = {}
        self._layer_cmds = {name: program.layer_commands(name) for name in program.layers}
        self.records: list[dict] = []  # one per layer execution (and per table precompute)
        self._host_prepared: dict[int, QLinearWeights] = {}  # qembedding tables, unpacked once
        self.vector = VectorRunner(graph, tensors)  # VEC_* commands (--vector-unit)

    # ---- weights
    def tile_codes(self, plan: LayerPlan, nt: int, ks: int) -> np.ndarray:
        key = (plan.node, nt, ks)
        if key not in self._tiles:
            cfg = plan.array
            k0, k1 = plan.k_splits[ks]
            off, nb = plan.tile_offsets[nt][ks], plan.tile_bytes[nt][ks]
            blob = self.tensors[f"{plan.node}.w"][off : off + nb]
            self._tiles[key] = decode_tile(self.prog.design, blob, cfg.bits, cfg.N, k1 - k0, cfg.K).astype(np.int64)
        return self._tiles[key]

    def layer_weights(self, plan: LayerPlan) -> LayerWeights:
        if plan.node not in self._weights:
            t = self.tensors
            codes = np.zeros((plan.n_pad, plan.k), np.int64)
            N = plan.array.N
            for nt in range(plan.n_tiles):
                for ks, (k0, k1) in enumerate(plan.k_splits):
                    codes[nt * N : (nt + 1) * N, k0:k1] = self.tile_codes(plan, nt, ks)
            self._weights[plan.node] = LayerWeights(
                codes,
                t[f"{plan.node}.zeros"].astype(np.int64),
                t[f"{plan.node}.mant"].astype(np.int64),
                t[f"{plan.node}.d"].astype(np.int64),
                t[f"{plan.node}.E"].astype(np.int64),
                t[f"{plan.node}.mm"].astype(np.int64) if plan.mins else None,
                t[f"{plan.node}.dm"].astype(np.int64) if plan.mins else None,
            )
        return self._weights[plan.node]

    # ---- the command loop
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        g = self.graph
        env = {k: np.asarray(feeds[k]) for k in g.inputs}
        acts: dict[str, ActInputs] = {}
        self.vector.ints.clear()
        self.vector.bits.clear()
        cmds = self.prog.commands
        pc = 0
        while pc < len(cmds):
            c = cmds[pc]
            if c.op == "HOST_OP":
                node = g.nodes[c.args["index"]]
                ins = [g.consts[v] if v in g.consts else env[v] for v in node.inputs]
                for name, val in zip(node.outputs, KERNELS[node.op](ins, node.attrs, self.host_prepared(c.args["index"], node, ins))):
                    env[name] = val
                if node.op in PASS_THROUGH:
                    self.vector.pass_through(node, env)
            elif c.op.startswith("VEC_"):
                self.vector.run(c, env)
            elif c.op == "QUANT_ACT" and c.args.get("from_vector"):
                acts[c.node] = vector_act(*self.vector.ints[c.node], c.args["group"])
            elif c.op == "QUANT_ACT":
                base = ArrayConfig.from_dict(self.prog.array)
                acts[c.node] = quantize_act(env[c.node], c.args["act"], c.args["group"], base.bfp_bits, base.shift_bits)
            elif c.op == "PRECOMPUTE_TABLE":
                act = acts[c.node]
                act.tables = golden.lut_tables(act.a, c.args["K"])
                # builds = tables made (one per row and K-chunk), once for all consumers of the tensor
                self.records.append({"kind": "table", "node": c.node, "rows": int(act.a.shape[0]), "builds": int(act.tables.shape[0] * act.tables.shape[1]), "entries": int(act.tables.size)})
            elif c.op == "LAYER":
                plan = self.prog.layers[c.node]
                body = self._layer_cmds[c.node]
                x = env[plan.input]
                y = self.run_layer(plan, body, acts[plan.input])
                env[plan.node] = self.scale_out(plan, y, acts[plan.input]).reshape(*x.shape[:-1], plan.n)
                pc += len(body)
                continue
            else:
                raise ValueError(f"command {c.op} outside a layer")
            pc += 1
        return {o: env[o] for o in g.outputs}

    def host_prepared(self, index: int, node, ins):
        """What a host kernel needs prepared: a qembedding's unpacked table (compiler.reference), else None."""
        if node.op != "qembedding":
            return None
        if index not in self._host_prepared:
            self._host_prepared[index] = QLinearWeights(ins[1], ins[2], ins[3], node.attrs)
        return self._host_prepared[index]

    def scale_out(self, plan: LayerPlan, Y: np.ndarray, act: ActInputs) -> np.ndarray:
        """SCALE_OUT: Y [S, n] int64 -> float32 y = Y * 2^(E - (MW-1)) * row_scale (+ bias)."""
        cfg = plan.array
        w = self.layer_weights(plan)
        Y = golden.wrap_signed(Y, cfg.y_bits)
        y = (np.ldexp(Y.astype(np.float64), w.E[None, :] - (cfg.mant_bits - 1)) * act.row_scale[:, None]).astype(np.float32)
        if plan.bias is not None:
            y = (y + self.graph.consts[plan.bias]).astype(np.float32)
        return y

    def run_layer(self, plan: LayerPlan, body: list[Command], act: ActInputs) -> np.ndarray:
        """Integer Y [S, n] of one layer: the commands one by one, golden.tile_y per array job."""
        cfg = plan.array
        S = act.a.shape[0]
        M, g = cfg.M, cfg.group
        rt = -(-S // M)
        a = np.zeros((rt * M, plan.k), np.int64)
        a[:S] = act.a
        da = np.zeros((rt * M, plan.k // g), np.int64)
        da[:S] = act.da
        w = self.layer_weights(plan)
        Y = np.zeros((rt * M, plan.n_pad), np.int64)
        jobs = 0
        cur = {}
        i = 0
        while i < len(body):
            c = body[i]
            if c.op == "LOAD_W":
                nt, ks = c.args["tile"]
                cur["codes"] = self.tile_codes(plan, nt, ks)
                cur["n0"], cur["n1"] = c.args["n"]
                cur["k0"], cur["k1"] = c.args["k"]
            elif c.op == "LOAD_SCALES":
                j0, j1 = c.args["groups"]
                n0, n1 = cur["n0"], cur["n1"]
                cur["j0"], cur["j1"] = j0, j1
                cur["zeros"], cur["mant"], cur["d"] = w.zeros[n0:n1, j0:j1], w.mant[n0:n1, j0:j1], w.d[n0:n1, j0:j1]
                cur["mm"] = None if w.mm is None else w.mm[n0:n1, j0:j1]
                cur["dm"] = None if w.dm is None else w.dm[n0:n1, j0:j1]
            elif c.op == "ROW_LOOP":
                loop = body[i + 1 : i + 1 + c.args["body"]]
                for r in range(rt):
                    m0 = r * M
                    for lc in loop:
                        if lc.op == "LOAD_A":
                            cur["a"] = a[m0 : m0 + M, cur["k0"] : cur["k1"]]
                            cur["da"] = da[m0 : m0 + M, cur["j0"] : cur["j1"]]
                        elif lc.op == DESIGNS[self.prog.design].mma_op:
                            cur["y"] = golden.tile_y(cfg, cur["a"], cur["codes"], cur["zeros"], cur["mant"], cur["d"], cur["da"],
                                                     cur["mm"], cur["dm"])
                            jobs += 1
                        elif lc.op == "DEQUANT":
                            pass  # the dyadic epilogue is part of tile_y (the array's output is Y)
                        elif lc.op == "STORE":
                            blk = Y[m0 : m0 + M, cur["n0"] : cur["n1"]]
                            blk[...] = blk + cur["y"] if lc.args["accumulate"] else cur["y"]
                        else:
                            raise ValueError(f"unexpected {lc.op} in a row loop")
                i += 1 + len(loop)
                continue
            elif c.op in ("LAYER", "SCALE_OUT"):
                pass
            else:
                raise ValueError(f"unexpected {c.op} in layer {plan.node}")
            i += 1
        self.records.append({"kind": "layer", "node": plan.node, "rows": S, "jobs": jobs, "macs": S * plan.n * plan.k})
        return Y[:S, : plan.n]


def run_reference(artifact, design: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Convenience: the accelerator integer reference of an artifact's <design> program on feeds."""
    from compiler.backends.accel.program import load_program

    prog, tensors = load_program(artifact, design)
    return ProgramExecutor(artifact.graph, prog, tensors).run(feeds)
