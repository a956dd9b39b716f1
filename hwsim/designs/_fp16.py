"""Arrays with FP16 activations (the papers' own configurations; docs/hwsim/fp16_arrays.md): their records,
configuration, cycle model and test tiles.

They are not in `hwsim.designs.DESIGNS` (this module's leading underscore keeps it out of discovery): the
integer arrays' consumers (the compiler's accelerator backend, the cost model, reports, sweeps) take the
integer contract of hwsim/golden.py 1-5, which these arrays do not compute. `FP16_DESIGNS` is their own
table; rtl.sim.make_config / run_sim / rtl.synth.synthesize take their names too.

`lut-tc-fp16` (rtl/gen/lut_tc_fp16.py): LUT Tensor Core with fp16 activations: per row a table unit of fp16
adders builds the beat's symmetric tables; per PE one lookup per cycle (weight plane b in cycle b), the
entry times 2^b added into an fp32 group accumulator, and a per-PE epilogue (zero-point correction c S,
the scale s, the job's Y). Arithmetic: hwsim.golden.fp16_lut_tile; timing: `simulate_serial`.

`mixpe-fp16` (rtl/gen/mixpe_fp16.py): MixPE's fp16 mode: per PE and feature the activation's significand
shifted by each set bit of |q - z| and added (an exact fp32 product, the exponent passed through), the
beat's fp32 tree, an fp32 group accumulator and a per-PE epilogue (times s, into Y). Arithmetic:
hwsim.golden.fp16_mixpe_tile; timing as mac-fp16 (`simulate`).

`mac-fp16` (rtl/gen/mac_fp16.py): the FP16 MAC tensor-core baseline. Per column a dequantizer makes the
beat's K fp16 weights w = fp16((q - z) s) (shared by the rows); per PE K fp16 x fp16 multipliers with exact
fp32 products, a (K-1)-adder fp32 tree and one fp32 accumulator adder. Arithmetic: hwsim.golden.fp16_mac_tile.

Activation format (Fp16Config.act): "fp16" (IEEE binary16), or "bf16" (bfloat16: 8 exponent, 7 fraction
bits): the same designs and ports, every 16-bit float of the interface (activations, scales) and inside
(mac's weights, lut's table entries) in that format, sums in fp32; module names carry it (macbf16_...).
The golden docstrings state what each step rounds in bf16.

Interface (one flat Verilog module, AXI-stream handshakes as the integer arrays, rtl/gen/common.py):
    in_act [M*K*16]   x[m, k0+t] fp16 bits at (m*K + t)*16        in_w [N*K*B]  q[n, k0+t] at (n*K + t)*B
    in_zero [N*B], in_scale [N*16]  z[n, j] and the fp16 scale s[n, j], read on a group's first beat
    in_last           the job's final beat (it ends a group)
    out_data [lanes*32]  Y (fp32 bits) of slots l + lanes*i (slot m*N + n), out_last on the job's final beat
Timing (`simulate`): a beat is accepted every cycle; the job's last beat moves the M*N results into the
output bank, which drains `lanes` per cycle (D = M*N / lanes beats) while the next job computes; a job's
last beat waits (in_ready low) while the bank still holds the previous job, unless its final beat leaves
in that cycle. in_ready = ~in_last | ~busy | (out_fire & out_last): it depends on the in_last payload and
on out_ready, never on in_valid.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, replace

import numpy as np

from hwsim import golden


@dataclass(frozen=True)
class ActFormat:
    """A 16-bit IEEE-style format: exponent and fraction widths and the bit patterns the test tiles use."""

    name: str
    EW: int
    FW: int
    pos_inf: int
    neg_inf: int
    max: int
    min_normal: int
    one: int
    emin: int  # the smallest subnormal is 2^emin
    emax: int  # finite values are below 2^(emax + 1)


ACT = {
    "fp16": ActFormat("fp16", 5, 10, 0x7C00, 0xFC00, 0x7BFF, 0x0400, 0x3C00, -24, 15),
    "bf16": ActFormat("bf16", 8, 7, 0x7F80, 0xFF80, 0x7F7F, 0x0080, 0x3F80, -133, 127),
}


@dataclass(frozen=True)
class Fp16Design:
    name: str
    title: str
    label: str
    generator: str  # rtl/gen module with generate(cfg) -> str
    sim_defaults: dict
    golden: str  # the hwsim.golden function that defines its output
    bit_serial: bool = False  # one weight bit-plane per cycle: a beat takes B cycles


FP16_DESIGNS = {
    "mac-fp16": Fp16Design(
        name="mac-fp16",
        title="FP16 MAC tensor core: weights dequantized to fp16, fp16 x fp16 multipliers, fp32 accumulation",
        label="MAC-FP16",
        generator="rtl.gen.mac_fp16",
        sim_defaults=dict(M=2, N=8, K=4, bits=4, group=32, lanes=4),
        golden="fp16_mac_tile",
    ),
    "mixpe-fp16": Fp16Design(
        name="mixpe-fp16",
        title="MixPE, fp16 mode: shift-and-add of the activation significand by the integer weight's bits, fp32 accumulation",
        label="MixPE-FP16",
        generator="rtl.gen.mixpe_fp16",
        sim_defaults=dict(M=2, N=8, K=4, bits=4, group=32, lanes=4),
        golden="fp16_mixpe_tile",
    ),
    "lut-tc-fp16": Fp16Design(
        name="lut-tc-fp16",
        title="LUT tensor core, FP16 activations: fp16 symmetric tables, bit-serial weight planes, fp32 accumulation",
        label="LUT-TC-FP16",
        generator="rtl.gen.lut_tc_fp16",
        sim_defaults=dict(M=2, N=8, K=4, bits=2, group=32, lanes=4),
        golden="fp16_lut_tile",
        bit_serial=True,
    ),
}

LIMITS = {"M": 64, "N": 256, "group": 1 << 12}


@dataclass(frozen=True)
class Fp16Config:
    """One FP16-activation array: shape, weight bits, group size, output lanes, activation format (fp16, bf16)."""

    design: str
    M: int = 2
    N: int = 8
    K: int = 4  # features per beat, a power of two
    bits: int = 4  # weight code bits B (1..4)
    group: int = 32
    lanes: int = 4
    act: str = "fp16"  # the 16-bit float format of activations, scales and the 16-bit intermediates: fp16 or bf16

    def __post_init__(self):
        if self.design not in FP16_DESIGNS:
            raise ValueError(f"unknown FP16 design {self.design!r}; choose one of {', '.join(FP16_DESIGNS)}")
        if self.act not in golden.ACT_FORMATS:
            raise ValueError(f"act={self.act!r} is not an activation format; use act=fp16 or act=bf16")
        for k in ("M", "N", "K", "bits", "group", "lanes"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{k} must be a positive whole number, got {v!r}")
            if k in LIMITS and v > LIMITS[k]:
                raise ValueError(f"{k}={v} exceeds the limit of {LIMITS[k]}")
        if self.K & (self.K - 1) or self.K > 16:
            raise ValueError(f"K={self.K} must be a power of two up to 16 (the beat's adder tree)")
        if not 1 <= self.bits <= 4:
            raise ValueError(f"weight bits must be 1..4, got {self.bits}")
        if self.group % self.K:
            raise ValueError(f"group {self.group} must be a multiple of K={self.K}")
        if (self.M * self.N) % self.lanes:
            raise ValueError(f"lanes={self.lanes} must divide M x N = {self.M * self.N}")

    @property
    def design_record(self) -> Fp16Design:
        return FP16_DESIGNS[self.design]

    @property
    def name(self) -> str:
        base = self.design.replace("-", "") if self.act == "fp16" else self.design.removesuffix("-fp16").replace("-", "") + self.act
        return f"{base}_w{self.bits}g{self.group}_m{self.M}n{self.N}k{self.K}l{self.lanes}"

    @property
    def fmt(self) -> ActFormat:
        return ACT[self.act]

    @property
    def chunks_per_group(self) -> int:
        return self.group // self.K

    @property
    def drain_beats(self) -> int:
        return self.M * self.N // self.lanes

    @property
    def macs_per_beat(self) -> int:
        return self.M * self.N * self.K

    @property
    def cycles_per_beat(self) -> int:
        return self.bits if self.design_record.bit_serial else 1

    def to_dict(self) -> dict:
        return asdict(self)

    def with_(self, **kw) -> Fp16Config:
        return replace(self, **kw)


def is_fp16_design(name: str) -> bool:
    return name in FP16_DESIGNS


def golden_y(design: str, t: dict, group: int, K: int, bits: int, act: str = "fp16") -> np.ndarray:
    """`design`'s golden output (fp32 bit patterns [rows, columns]) for inputs `t` (keys x, codes, zeros,
    scales; x and scales in format `act`) of any number of rows and columns."""
    rec = FP16_DESIGNS[design]
    extra = (bits,) if rec.bit_serial else ()
    return getattr(golden, rec.golden)(t["x"], t["codes"], t["zeros"], t["scales"], group, K, *extra, act=act)


def tile_y(cfg: Fp16Config, t: dict) -> np.ndarray:
    """The design's golden output for one tile of cfg's shape."""
    return golden_y(cfg.design, t, cfg.group, cfg.K, cfg.bits, cfg.act)


# ----------------------------------------------------------------------------------------------------
# Cycle model: the RTL's handshakes, cycle by cycle


def stall_patterns(seed: int, n: int, p_valid: float = 0.8, p_ready: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """The driver's offer pattern (a new beat may be put on the bus in cycle c) and out_ready per cycle."""
    rng = np.random.default_rng(seed)
    return rng.random(n) < p_valid, rng.random(n) < p_ready


def simulate(cfg: Fp16Config, job_beats: list[int], offer: np.ndarray, ready: np.ndarray) -> tuple[list[int], list[int]]:
    """Cycles (counted from the first after reset) in which each input beat and each output beat moves.

    The driver puts the next beat on the bus in a cycle where offer[c % len] holds and it is not already
    showing one, and holds it until taken; out_ready in cycle c is ready[c % len]."""
    D = cfg.drain_beats
    lasts = [i == b - 1 for b in job_beats for i in range(b)]
    busy, ocnt, showing, bi, c = False, 0, False, 0, 0
    ins: list[int] = []
    outs: list[int] = []
    total_out = D * len(job_beats)
    while bi < len(lasts) or len(outs) < total_out:
        if not showing and bi < len(lasts) and offer[c % len(offer)]:
            showing = True
        out_fire = busy and bool(ready[c % len(ready)])
        out_last = ocnt == D - 1
        in_fire = showing and (not lasts[bi] or not busy or (out_fire and out_last))
        if out_fire:
            outs.append(c)
            busy, ocnt = (False, 0) if out_last else (True, ocnt + 1)
        if in_fire:
            ins.append(c)
            if lasts[bi]:
                busy, ocnt = True, 0
            bi += 1
            showing = False
        c += 1
    return ins, outs


def simulate_serial(cfg: Fp16Config, job_beats: list[int], offer: np.ndarray, ready: np.ndarray) -> tuple[list[int], list[int]]:
    """`simulate` for a bit-serial array (lut-tc-fp16): an accepted beat is held in registers and its B
    planes take the next B cycles; the next beat is accepted in the cycle of the last plane. The job's
    final plane (it writes the output bank) waits while the bank holds the previous job, unless the
    bank's final beat leaves in that cycle. in_ready = ~have | (advance & last plane)."""
    B, D = cfg.bits, cfg.drain_beats
    lasts = [i == b - 1 for b in job_beats for i in range(b)]
    busy, ocnt, showing, have, pb, cur_last, bi, c = False, 0, False, False, 0, False, 0, 0
    ins: list[int] = []
    outs: list[int] = []
    total_out = D * len(job_beats)
    while bi < len(lasts) or have or len(outs) < total_out:
        if not showing and bi < len(lasts) and offer[c % len(offer)]:
            showing = True
        out_fire = busy and bool(ready[c % len(ready)])
        out_last = ocnt == D - 1
        plast = pb == B - 1
        final = have and plast and cur_last
        adv = have and (not final or not busy or (out_fire and out_last))
        in_fire = showing and (not have or (adv and plast))
        if out_fire:
            outs.append(c)
            busy, ocnt = (False, 0) if out_last else (True, ocnt + 1)
        if adv and final:
            busy, ocnt = True, 0
        if adv:
            pb = 0 if plast else pb + 1
            have = have and not plast
        if in_fire:
            ins.append(c)
            have, pb, cur_last = True, 0, lasts[bi]
            bi += 1
            showing = False
        c += 1
    return ins, outs


def cycle_model(cfg: Fp16Config):
    return simulate_serial if cfg.design_record.bit_serial else simulate


def steady_cycles(cfg: Fp16Config, job_beats: list[int]) -> int:
    """Cycles of a job stream with no input idles and out_ready always high (simulate's closed form check)."""
    ins, outs = cycle_model(cfg)(cfg, job_beats, np.ones(1, bool), np.ones(1, bool))
    return outs[-1] + 1


# ----------------------------------------------------------------------------------------------------
# Tiles: random and corner cases (fp16 bit patterns as int64)

F16_POS_INF, F16_NEG_INF, F16_MAX, F16_MIN_NORMAL, F16_MAX_SUB = 0x7C00, 0xFC00, 0x7BFF, 0x0400, 0x03FF  # (ACT['fp16'])


def _finite_f16(rng, shape, lo_exp: int = -24, hi_exp: int = 15, act: str = "fp16") -> np.ndarray:
    """Random finite values of every magnitude in [2^lo_exp, 2^hi_exp), both signs, as `act` bits."""
    e = rng.uniform(lo_exp, hi_exp, size=shape)
    v = np.sign(rng.random(shape) - 0.5) * np.exp2(e)
    return golden.f16_bits(v.astype(np.float16)) if act == "fp16" else golden.bf16_bits(v)


def random_tile(cfg: Fp16Config, rng: np.random.Generator, n_groups: int = 1, kind: str = "random") -> dict:
    """One job's inputs (x and scales in cfg.act's format). kinds: random (activations of moderate range,
    random scales), wide (every magnitude of the format: subnormal to near overflow), bits (uniformly random
    bit patterns: NaNs and infinities included), cancel (x then -x against the same weights: the sum cancels
    to rounding), sub (subnormal activations and scales), inf (infinities against zero weights and zero
    scales: NaN, and overflow of the dequantizer); bf16 only: edge (products at fp32's overflow and
    underflow thresholds: x and s near 2^+-64, products rounded to fp32 subnormals, to zero or to inf)."""
    M, N, G, B, f = cfg.M, cfg.N, cfg.group, cfg.bits, cfg.fmt
    kt = G * n_groups
    codes = rng.integers(0, 1 << B, size=(N, kt))
    zeros = rng.integers(0, 1 << B, size=(N, n_groups))
    x = _finite_f16(rng, (M, kt), -6, 6, cfg.act)
    sv = np.exp2(rng.uniform(-10, -2, size=(N, n_groups)))
    scales = golden.f16_bits(sv.astype(np.float16)) if cfg.act == "fp16" else golden.bf16_bits(sv)
    if kind == "wide":
        x = _finite_f16(rng, (M, kt), f.emin, f.emax, cfg.act)
        scales = _finite_f16(rng, (N, n_groups), f.emin, f.emax - 3, cfg.act)
    elif kind == "bits":
        x = rng.integers(0, 1 << 16, size=(M, kt))
        scales = rng.integers(0, 1 << 16, size=(N, n_groups))
    elif kind == "cancel":
        half = x[:, : kt // 2]
        x = np.concatenate([half, half ^ 0x8000], axis=1)
        codes = np.concatenate([codes[:, : kt // 2]] * 2, axis=1)
        zeros = np.repeat(zeros[:, :1], n_groups, axis=1)
        scales = np.repeat(scales[:, :1], n_groups, axis=1)  # every group the same: equal weights, opposite x
    elif kind == "sub":
        x = rng.integers(0, f.min_normal, size=(M, kt)) | (rng.integers(0, 2, size=(M, kt)) << 15)
        scales = rng.integers(1, f.min_normal, size=(N, n_groups))
    elif kind == "inf":
        x = np.where(rng.random((M, kt)) < 0.05, rng.choice([f.pos_inf, f.neg_inf], size=(M, kt)), x)
        scales = rng.choice([f.max, 0, 0x8000, f.pos_inf, f.one], size=(N, n_groups))
        codes = rng.choice([0, (1 << B) - 1], size=(N, kt))
    elif kind == "edge" and cfg.act == "bf16":
        # big x big lands at 2^110 .. 2^132 (some overflow fp32), tiny x tiny at 2^-155 .. 2^-130 (fp32
        # subnormals and zeros), the mixed pairs in between
        ex = np.where(rng.random((M, kt)) < 0.5, rng.uniform(55, 66, (M, kt)), rng.uniform(-75, -60, (M, kt)))
        es = np.where(rng.random((N, n_groups)) < 0.5, rng.uniform(55, 62, (N, n_groups)), rng.uniform(-80, -70, (N, n_groups)))
        x = golden.bf16_bits(np.sign(rng.random((M, kt)) - 0.5) * np.exp2(ex))
        scales = golden.bf16_bits(np.exp2(es))
    elif kind != "random":
        raise ValueError(f"unknown tile kind {kind!r} for act={cfg.act}; use one of {', '.join(tile_kinds(cfg))}")
    return {k: np.asarray(v, dtype=np.int64) for k, v in dict(x=x, codes=codes, zeros=zeros, scales=scales).items()}


TILE_KINDS = ("random", "wide", "bits", "cancel", "sub", "inf")
BF16_TILE_KINDS = TILE_KINDS + ("edge",)


def tile_kinds(cfg: Fp16Config) -> tuple[str, ...]:
    return BF16_TILE_KINDS if cfg.act == "bf16" else TILE_KINDS


def corner_tiles(cfg: Fp16Config, rng: np.random.Generator) -> list[dict]:
    """Fixed cases: all zeros of both signs, the largest values (the dequantizer's overflow to inf), a
    NaN activation; bf16 also products that overflow fp32 from finite weights (Y = +inf) and products
    that round to fp32 subnormals or to zero; then one tile of each kind above."""
    M, N, G, B, f = cfg.M, cfg.N, cfg.group, cfg.bits, cfg.fmt
    out = []
    zero = dict(x=np.full((M, G), 0x8000), codes=np.zeros((N, G)), zeros=np.zeros((N, 1)), scales=np.full((N, 1), f.one))
    out.append(zero)  # -0 * +0 everywhere: Y = -0
    big = dict(x=np.full((M, G), f.max), codes=np.full((N, G), (1 << B) - 1), zeros=np.zeros((N, 1)), scales=np.full((N, 1), f.max))
    out.append(big)  # 65504 * 15 overflows fp16 (bf16: its max * 15): w = inf
    nan = dict(x=np.full((M, G), f.one), codes=np.ones((N, G)), zeros=np.zeros((N, 1)), scales=np.full((N, 1), f.one))
    nan["x"][0, 0] = 0x7E01 if cfg.act == "fp16" else 0x7F81  # a NaN with a payload: out as the canonical NaN
    out.append(nan)
    if cfg.act == "bf16":
        over = dict(x=np.full((M, G), 0x7180), codes=np.full((N, G), (1 << B) - 1), zeros=np.zeros((N, 1)), scales=np.full((N, 1), 0x4E80))
        out.append(over)  # 2^100 * (2^B - 1) 2^30: a finite weight, the fp32 product +inf
        under = dict(x=np.where(np.arange(G) % 2, 0x0381, 0x8001) * np.ones((M, 1), np.int64), codes=np.full((N, G), (1 << B) - 1),
                     zeros=np.zeros((N, 1)), scales=np.full((N, 1), 0x3301))
        out.append(under)  # (1 + 2^-7) 2^-120 * w ~ 2^-145: rounded fp32 subnormals; -2^-133 * w: -0
    out = [{k: np.asarray(v, dtype=np.int64) for k, v in t.items()} for t in out]
    out += [random_tile(cfg, rng, 1 + (i % 2), kind) for i, kind in enumerate(tile_kinds(cfg))]
    return out


# ----------------------------------------------------------------------------------------------------
# A whole linear layer on the array: row and column tiles, one job per tile over all of K


def run_layer(cfg: Fp16Config, x: np.ndarray, codes: np.ndarray, zeros: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, int]:
    """y = x W^T of a quantized layer on the array, float32 [R, Nout], and the cycles it takes with no stalls.

    x float32 [R, KT] is rounded to cfg.act (fp16 or bf16, nearest even) as it enters; codes [Nout, KT], zeros
    [Nout, J]; scales [Nout, J] are rounded to cfg.act too (exact for scales stored in that format). The layer's group size must be
    cfg.group. Rows are cut into tiles of M and columns into tiles of N (zero-padded); each tile is one job
    over all KT features, the jobs streamed back to back (`steady_cycles`)."""
    R, kt = x.shape
    nout = codes.shape[0]
    if kt % cfg.group:
        raise ValueError(f"{kt} features are not a whole number of groups of {cfg.group}")
    x16 = golden.act_bits(np.asarray(x, np.float32), cfg.act)
    s16 = golden.act_bits(np.asarray(scales, np.float32), cfg.act)
    M, N = cfg.M, cfg.N
    y = np.zeros((R, nout), np.float32)
    jobs = 0
    for r0 in range(0, R, M):
        xt = np.zeros((M, kt), np.int64)
        xt[: min(M, R - r0)] = x16[r0 : r0 + M]
        for n0 in range(0, nout, N):
            w = min(N, nout - n0)
            t = {k: np.zeros((N,) + v.shape[1:], np.int64) for k, v in dict(codes=codes, zeros=zeros, scales=s16).items()}
            t["codes"][:w], t["zeros"][:w], t["scales"][:w] = codes[n0 : n0 + w], zeros[n0 : n0 + w], s16[n0 : n0 + w]
            t["x"] = xt
            yt = tile_y(cfg, t).astype(np.uint32).view(np.float32)
            y[r0 : r0 + M, n0 : n0 + w] = yt[: min(M, R - r0), :w]
            jobs += 1
    return y, steady_cycles(cfg, [kt // cfg.K] * jobs)
