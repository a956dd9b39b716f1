"""The accelerator program: a flat list of commands (small dataclasses) plus one plan per quantized linear,
serialized to <artifact>/<design>/program.json. The format is described in this folder's README.md.

Commands are sequence-length agnostic: the row dimension S of the activations is only known at run time,
so a `ROW_LOOP` command repeats the next `body` commands once per row tile of `M` rows (the last tile is
zero-padded). Everything else (column tiles, K splits, weight offsets) is static.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from compiler.errors import LowbitError
from hwsim.config import ArrayConfig

PROGRAM = "program.json"
WEIGHTS = "weights.safetensors"
PROGRAM_FORMAT = "lowbit-accel-program"
PROGRAM_VERSION = 1

# every op the stream may hold; where it runs
OPS = {
    "HOST_OP": "host",  # a non-linear graph node (norm, attention, rope, softmax, add, float linear ...) in numpy
    "QUANT_ACT": "host",  # per-token int8 (A8) or BFP (A16) of one activation tensor, fused into its producer
    "PRECOMPUTE_TABLE": "array",  # designs with precompute_tables: symmetric tables of one activation tensor, fused into its producer
    "LAYER": "array",  # start of one quantized linear: clears the output buffer
    "LOAD_W": "array",  # weight tile (re-laid-out codes) DRAM -> weight SRAM
    "LOAD_SCALES": "array",  # the tile's zero points and dyadic scales (mant, d; and minimums mm, dm) -> weight SRAM
    "ROW_LOOP": "array",  # repeat the next `body` commands for each row tile of M rows
    "LOAD_A": "array",  # activation row tile (int8 / BFP mantissas, and da) -> activation SRAM
    # the matrix command of a design is its record's mma_op (hwsim.designs):
    "LUT_MMA": "array",  # table lookups, bit-serial over weight planes, group accumulators (lut-tc)
    "SHIFT_ADD_MMA": "array",  # shift-and-add over the bits of q - z, group accumulators (mixpe)
    "MAC_MMA": "array",  # dequantize-then-multiply (the mac baseline)
    "DEQUANT": "array",  # the dyadic per-group epilogue: Y += rshift_round(acc * mant, d + da) (+ rshift_round(S * mm, dm + da))
    "STORE": "array",  # Y tile -> output buffer (accumulated over K splits)
    "SCALE_OUT": "host",  # y = Y * 2^(E[n] - (MW-1)) * row_scale[m] (+ bias), float32
    # the vector unit (--vector-unit; compiler/backends/accel/vector.py, hwsim.vector's golden models):
    "VEC_NORM": "vector",  # RMSNorm / I-LayerNorm of int8 rows (input quantized per row), int8 out at a static scale
    "VEC_GATE": "vector",  # ShiftGELU / SiLU, int8 in and out at static scales
    "VEC_QK": "vector",  # int8 Q K^T per head, int32 scores (masked ones at the int32 minimum)
    "VEC_SOFTMAX": "vector",  # Shiftmax of the int32 scores: uint8 probabilities at 2^-8
    "VEC_PV": "vector",  # uint8 P x int8 V per head, int8 out at a static scale
}


@dataclass
class Command:
    op: str
    node: str = ""  # the graph value this command belongs to (a layer's output, or a host node's first output)
    args: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"op": self.op, "node": self.node, **self.args}

    @classmethod
    def from_json(cls, d: dict) -> "Command":
        d = dict(d)
        return cls(d.pop("op"), d.pop("node", ""), d)


@dataclass
class LayerPlan:
    """One quantized linear mapped onto the array."""

    node: str  # output name of the qlinear node
    index: int  # node index in the graph
    input: str  # activation tensor name
    n: int  # output features
    k: int  # input features
    cfg: dict  # ArrayConfig of the layer (design, M, N, K, bits, ternary, act, group, ...)
    n_pad: int  # n rounded up to the array's N
    n_tiles: int
    k_splits: list  # [[k0, k1], ...] group-aligned K ranges, each one array job per (row tile, column tile)
    tile_offsets: list  # [n_tiles][len(k_splits)] byte offset of the weight tile in <node>.w
    tile_bytes: list  # same shape: its size in bytes
    weight_layout: str  # "planes-beats" or "dense-beats" (the design's weight_layout); see README.md
    storage_bits: int  # bits per stored code in the layout (3-bit codes live in 4-bit containers in dense layouts)
    bias: str | None = None  # graph constant of the bias (added on the host in SCALE_OUT)
    mins: bool = False  # scale-and-minimum groups: <node>.mm / <node>.dm minimum fields, zero points 0 (README.md)

    @property
    def array(self) -> ArrayConfig:
        return ArrayConfig.from_dict(self.cfg)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "LayerPlan":
        return cls(**d)


@dataclass
class Program:
    design: str
    array: dict  # the target's base ArrayConfig (per-layer configs differ only in group/bits/act)
    memory: dict  # SRAM sizes the tiling was made for
    layers: dict  # node name -> LayerPlan
    commands: list  # [Command]
    stats: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "format": PROGRAM_FORMAT,
            "version": PROGRAM_VERSION,
            "design": self.design,
            "array": self.array,
            "memory": self.memory,
            "stats": self.stats,
            "layers": {k: v.to_json() for k, v in self.layers.items()},
            "commands": [c.to_json() for c in self.commands],
        }

    @classmethod
    def from_json(cls, d: dict) -> "Program":
        if d.get("format") != PROGRAM_FORMAT or d.get("version") != PROGRAM_VERSION:
            raise ValueError(f"not a {PROGRAM_FORMAT} v{PROGRAM_VERSION} document")
        return cls(
            design=d["design"],
            array=d["array"],
            memory=d["memory"],
            layers={k: LayerPlan.from_json(v) for k, v in d["layers"].items()},
            commands=[Command.from_json(c) for c in d["commands"]],
            stats=d.get("stats", {}),
        )

    def save(self, folder: Path):
        (Path(folder) / PROGRAM).write_text(json.dumps(self.to_json(), indent=1))

    def layer_commands(self, node: str) -> list[Command]:
        """The commands of one layer, from its LAYER command to its SCALE_OUT (inclusive)."""
        out, on = [], False
        for c in self.commands:
            if c.op == "LAYER" and c.node == node:
                on = True
            if on:
                out.append(c)
                if c.op == "SCALE_OUT":
                    break
        return out


def load_program(artifact, design: str) -> tuple[Program, dict]:
    """(Program, re-laid-out tensors) of an artifact's <design>/ folder; LowbitError when it was not built."""
    from safetensors.numpy import load_file

    hint = f"recompile with --target {design} (e.g. `lowbit compile MODEL -o OUT --target {design}`)"
    folder = artifact.target_dir(design)
    pf = folder / PROGRAM
    if design not in artifact.manifest.get("targets", {}) or not pf.is_file():
        raise LowbitError(f"artifact {artifact.path} was not compiled for the {design} accelerator", hint)
    try:
        prog = Program.from_json(json.loads(pf.read_text()))
        tensors = load_file(str(folder / WEIGHTS))
    except Exception as e:  # noqa: BLE001 - any unreadable program is the same user-facing problem
        raise LowbitError(f"the {design} program of artifact {artifact.path} is unreadable ({type(e).__name__}: {e})", hint) from None
    if prog.design != design:
        raise LowbitError(f"{pf} holds a {prog.design} program, not {design}", hint)
    return prog, tensors
