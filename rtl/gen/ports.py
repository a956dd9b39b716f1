"""The ports of every generated array, as records: one list read by the Verilog header
(rtl/gen/common.py `header`) and by the testbenches (rtl/tb/array_tb.py: the monitors' fields and the
packing of job inputs into beats and of beats back into integer arrays).

    stream_ports(cfg) -> list[Port]   every port of the module, in declaration order
    payload(cfg, stream) -> list[Port] the ports that move with a beat of stream "in" or "out" (data, last)

A data port carries an array of elements (`shape`, `bits` each, `signed` or not) packed little-endian:
element i of the row-major flattening sits at bits [i*bits, (i+1)*bits). Per-beat input ports carry the
beat's K-chunk of their TileInputs field (columns k0..k0+K-1); per-group ports carry column j of the
field on the first beat of weight group j and are ignored (driven 0) on the others. Arrays with the minimum
term (scale-and-minimum groups, `rtl.gen.common.MinsConfig`) have two more per-group ports, in_minm and
in_mins; arrays of E2M1 codes have no in_zero; a LUT array that streams its tables (ArrayConfig.table
"stream") takes in_tbl, each chunk's hwsim.golden.lut_tables of a (form "lut_tables"), instead of in_act. The handshake rules and the meaning of each field: rtl/gen/common.py's docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np

from hwsim.config import ArrayConfig


@dataclass(frozen=True)
class Port:
    name: str
    direction: str  # "input" or "output", seen from the array
    stream: str | None  # the handshake it belongs to: "in" or "out"; None for clk and rst_n
    role: str  # "clock", "reset", "valid", "ready", "last" or "data"
    carries: str  # what it carries
    shape: tuple[int, ...] = ()  # data: the element array; () for a one-bit wire
    bits: int = 1  # data: bits per element
    signed: bool = False  # data: elements are two's complement (else unsigned)
    per: str | None = None  # data: "beat" (every beat) or "group" (the first beat of each weight group)
    field: str | None = None  # data: the hwsim.golden.TileInputs field it carries ("y" for the output)
    form: str | None = None  # data: None (the field's values) or "lut_tables" (golden.lut_tables of the field's chunk)

    @property
    def count(self) -> int:
        return prod(self.shape) if self.shape else 1

    @property
    def width(self) -> int:
        return self.bits * self.count

    def declaration(self) -> str:
        """The Verilog-2005 port declaration (without the separating comma)."""
        rng = f" [{self.width - 1}:0]" if self.shape else ""
        return f"{self.direction:<6} wire{rng} {self.name}"

    def pack(self, values) -> int:
        """Elements (any array of `count` integers, row-major) -> the bus value."""
        v = np.asarray(values, dtype=np.int64).reshape(-1)
        if v.size != self.count:
            raise ValueError(f"{self.name} carries {self.count} elements, got {v.size}")
        bits = ((v[:, None] >> np.arange(self.bits)) & 1).astype(np.uint8).reshape(-1)
        return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")

    def unpack(self, x: int) -> np.ndarray:
        """The bus value -> its elements, int64 of `shape`."""
        nbits = self.width
        raw = np.frombuffer(int(x).to_bytes((nbits + 7) // 8, "little"), dtype=np.uint8)
        bits = np.unpackbits(raw, bitorder="little")[:nbits].reshape(self.count, self.bits).astype(np.int64)
        vals = bits @ (np.int64(1) << np.arange(self.bits, dtype=np.int64))
        if self.signed:
            vals = np.where(bits[:, -1] == 1, vals - (np.int64(1) << self.bits), vals)
        return vals.reshape(self.shape or (1,))


def stream_ports(cfg: ArrayConfig) -> list[Port]:
    c = cfg
    M, N, K, AW, B, MW, SW, YW, EL = c.M, c.N, c.K, c.act_bits, c.bits, c.mant_bits, c.shift_bits, c.y_bits, c.lanes
    grp = dict(stream="in", role="data", per="group")
    if c.streams_tables:
        E, TW = c.table_entries, c.table_bits
        act = Port("in_tbl", "input", "in", "data", "precomputed tables T[m, e] of the beat's K-chunk (hwsim.golden.lut_tables)",
                   (M, E), TW, True, "beat", "a", "lut_tables")
    else:
        act = Port("in_act", "input", "in", "data", "activations a[m, k0+t] of the beat's K-chunk", (M, K), AW, True, "beat", "a")
    return [
        Port("clk", "input", None, "clock", "the clock (every register samples its rising edge)"),
        Port("rst_n", "input", None, "reset", "synchronous reset, active low"),
        Port("in_valid", "input", "in", "valid", "an input beat is offered"),
        Port("in_ready", "output", "in", "ready", "the array takes the offered beat"),
        act,
        Port("in_w", "input", "in", "data", "weight codes q[n, k0+t] of the beat's K-chunk", (N, K), B, False, "beat", "codes"),
        # E2M1 codes (weight_format "e2m1", hwsim/golden.py 1b) have no zero points
        *([] if c.e2m1 else [Port("in_zero", "input", carries="zero points z[n, j]", shape=(N,), bits=B, field="zeros", **grp)]),
        Port("in_mant", "input", carries="dyadic scale mantissas mant[n, j]", shape=(N,), bits=MW, field="mant", **grp),
        Port("in_shift", "input", carries="dyadic scale right shifts d[n, j]", shape=(N,), bits=SW, field="d", **grp),
        Port("in_ashift", "input", carries="A16 block-exponent offsets da[m, j] (0 for A8)", shape=(M,), bits=SW, field="da", **grp),
        *(
            [
                Port("in_minm", "input", carries="signed dyadic minimum mantissas mm[n, j]", shape=(N,), bits=MW + 1, signed=True, field="mm", **grp),
                Port("in_mins", "input", carries="dyadic minimum right shifts dm[n, j]", shape=(N,), bits=SW, field="dm", **grp),
            ]
            if getattr(c, "mins", False)  # an array with the minimum term (rtl/gen/common.py MinsConfig)
            else []
        ),
        Port("in_last", "input", "in", "last", "the job's final input beat (it ends a group)"),
        Port("out_valid", "output", "out", "valid", "an output beat is offered"),
        Port("out_ready", "input", "out", "ready", "the consumer takes the offered beat"),
        Port("out_data", "output", "out", "data", "`lanes` values of Y, slots row-major (m*N + n)", (EL,), YW, True, "beat", "y"),
        Port("out_last", "output", "out", "last", "the job's final output beat"),
    ]


def payload(cfg: ArrayConfig, stream: str) -> list[Port]:
    """The ports whose values move with each beat of `stream` ("in" or "out"): its data ports and `last`."""
    return [p for p in stream_ports(cfg) if p.stream == stream and p.role in ("data", "last")]
