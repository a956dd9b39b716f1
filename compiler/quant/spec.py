"""Quantization spec strings: `w4g128`, `w2g64a8`, `w4g128-asym`, `w4g32-min`, `w8pc`, `ternary`, `none`.

Grammar (case-insensitive):  WEIGHTS [GROUP [SUB] | cb] [ACT] [-sym|-asym|-min] [-spP]
  WEIGHTS = w8 | w4 | w3 | w2 | ternary | mxfp4 | nvfp4 | nf4 | mxfp8 | fp8
            (the float formats: OCP MXFP4 in groups of 32 with E8M0 scales, NVFP4 in groups of 16 with E4M3
            scales and an FP32 tensor scale, QLoRA's NormalFloat-4 in groups of 64 (or the GROUP given) with fp16
            scales, OCP MXFP8 (E4M3 elements) in groups of 32 with E8M0 scales, FP8 E4M3 with an FP32 scale per
            output channel (or per GROUP along K); compiler.quant.floatfmt)
  GROUP   = g16 | g32 | g64 | g128 | pc  (pc = one group per output channel; the default when omitted)
  SUB     = k | k4 | k6 | k8             (two-level scales, K-quant style: each group's scale (and minimum) is a
                                          SUB-bit integer (signed in symmetric formats, as Q3_K / Q6_K store
                                          it) times one fp16 scale per super-block of 256 weights along K;
                                          k = k6. compiler.quant.twolevel)
  cb      = a non-uniform codebook per output row (SqueezeLLM): the codes index 2^b fp16 values found by
            (importance-)weighted k-means of the row, no group scale (compiler.quant.codebook); w8 excluded
  ACT     = a16 | a8 | afp8 | amx8 | amxfp4 | a32  (a16 = fp16 activations, the default; a8 = per-token dynamic int8;
                                          afp8 = per-token dynamic FP8 E4M3 (scale max|x| / 448); amx8 / amxfp4 =
                                          OCP MX activations, MXINT8 / MXFP4 per 32 values with an E8M0 scale;
                                          a32 = float32 activations as given: weight-only quantization)
  -min    = scale-and-minimum groups (w = s q + m with a float minimum per group: llama.cpp's Q4_1 rule)
  -spP    = dense-and-sparse (SpQR / SqueezeLLM): P percent of each row's weights (0 < P <= 10, at least
            one per row) kept as fp16 corrections in a sparse side matrix (compiler.quant.outliers)
Ternary weights are always symmetric (codes -1, 0, 1). A layer whose K the group does not divide uses the
rule of compiler.groups (`QuantSpec.group_for`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from compiler.errors import LowbitError
from compiler.groups import GROUP_SIZES, layer_group

WEIGHT_BITS = (8, 4, 3, 2)
ACT_MODES = ("a16", "a8", "afp8", "amx8", "amxfp4", "a32")
MX_ACTS = ("amx8", "amxfp4")  # activations in OCP MX blocks of MX_BLOCK values along K
MX_BLOCK = 32
CODED_ACTS = ("afp8", *MX_ACTS)  # quantized by their own rule to float values, then summed as A32

_SPEC_RE = re.compile(
    r"^(?:w(?P<bits>\d+)|(?P<tern>ternary)|(?P<fp>mxfp4|nvfp4|nf4|mxfp8|fp8b|fp8))(?:g(?P<group>\d+)(?:k(?P<sub>\d*))?|(?P<pc>pc)|(?P<cb>cb))?(?:a(?P<act>\d+|fp8|mx8|mxfp4))?(?:-(?P<sym>sym|asym|min))?(?:-sp(?P<sp>\d+(?:\.\d+)?))?$"
)

EXAMPLES = "w4g128, w2g64a8, w4g128-asym, w4g32-min, w4g32k-min, w3g16k, w2g16k-min-sp0.5, w3cb, mxfp4, nvfp4, nf4, mxfp8, fp8, fp8g128, fp8b, w4g32a32, w8pcafp8, fp8afp8, mxfp4amxfp4, w4g32amx8, w8pc, ternary, ternarya8, none"
MAX_OUTLIER_PCT = 10.0
SUB_BITS = (4, 6, 8)  # sub-scale widths of two-level scales (Q2_K: 4, Q3_K / Q4_K / Q5_K: 6, Q6_K: 8)


@dataclass(frozen=True)
class QuantSpec:
    bits: int  # 8, 4, 3, 2; ternary is bits=2 with ternary=True (codes stored as q+1 in 2 bits)
    group_size: int  # 0 means per-channel (one group spanning all K input features)
    act: str = "a16"  # one of ACT_MODES
    symmetric: bool = True
    ternary: bool = False
    minimum: bool = False  # scale-and-minimum groups (w = s q + m); not symmetric
    sub_bits: int = 0  # two-level scales: group scales as sub_bits-bit integers times an fp16 per 256 weights; 0: fp16 per group
    outliers: float = 0.0  # percent of each row's weights kept as fp16 sparse corrections (dense-and-sparse); 0: none
    codebook: bool = False  # codes index a per-row table of 2^bits fp16 values (SqueezeLLM); group_size 0, no zero point
    fp: str = ""  # a float format (mxfp4, nvfp4, nf4, mxfp8, fp8: compiler.quant.floatfmt): codebook weights with one shared table and group scales

    @property
    def name(self) -> str:
        if self.fp:
            from compiler.quant.floatfmt import FORMATS

            g = "" if self.group_size == FORMATS[self.fp] else f"g{self.group_size}"
            return f"{self.fp}{g}{'' if self.act == 'a16' else self.act}{f'-sp{self.outliers:g}' if self.outliers else ''}"
        w = "ternary" if self.ternary else f"w{self.bits}"
        g = "" if self.ternary and self.group_size == 0 else ("cb" if self.codebook else "pc" if self.group_size == 0 else f"g{self.group_size}")
        if self.sub_bits:
            g += "k" if self.sub_bits == 6 else f"k{self.sub_bits}"
        a = "" if self.act == "a16" else self.act
        s = "-min" if self.minimum else ("-asym" if not self.symmetric else "")
        sp = f"-sp{self.outliers:g}" if self.outliers else ""
        return f"{w}{g}{a}{s}{sp}"

    def outlier_count(self, k: int) -> int:
        """Sparse outliers per output row of a layer with k input features (0 without `-sp`)."""
        if not self.outliers:
            return 0
        return min(k, max(1, int(round(k * self.outliers / 100.0))))

    def group_for(self, k: int) -> int:
        """Group size for a layer with k input features: the spec's, or by compiler.groups.layer_group the
        largest supported size below it that divides k, else per-channel (k)."""
        return layer_group(k, self.group_size)

    @property
    def qmax(self) -> int:
        """Largest stored code (codes are unsigned in [0, qmax]; ternary stores q+1 in [0, 2])."""
        return 2 if self.ternary else (1 << self.bits) - 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QuantSpec":
        return cls(**d)


def names_act(text: str) -> bool:
    """Whether a spec string names its activation mode (`w4g32a8`), rather than taking the default or --act."""
    m = _SPEC_RE.match(text.strip().lower())
    return m is not None and m.group("act") is not None


def parse_spec(text: str) -> QuantSpec | None:
    """Parse a spec string; `none` (or `float`) returns None, meaning the float model."""
    s = text.strip().lower()
    if s in ("none", "float", "fp32"):
        return None
    m = _SPEC_RE.match(s)
    if not m:
        raise LowbitError(f"cannot parse quant spec '{text}'", f"use one of the forms {EXAMPLES}")
    tern = m.group("tern") is not None
    fp = m.group("fp") or ""
    if fp:
        return _fp_spec(text, m, fp)
    bits = 2 if tern else int(m.group("bits"))
    if not tern and bits not in WEIGHT_BITS:
        raise LowbitError(
            f"unsupported weight bit width {bits} in quant spec '{text}'",
            f"use w8, w4, w3, w2 or ternary (e.g. w{4}g128)",
        )
    group = 0
    if m.group("group") is not None:
        group = int(m.group("group"))
        if group not in GROUP_SIZES:
            raise LowbitError(
                f"unsupported group size {group} in quant spec '{text}'",
                "use g16, g32, g64, g128 or pc (per-channel)",
            )
    sub_bits = 0
    if m.group("sub") is not None:
        sub_bits = int(m.group("sub") or 6)
        if sub_bits not in SUB_BITS:
            raise LowbitError(f"unsupported sub-scale width k{sub_bits} in quant spec '{text}'", "use k (6 bits), k4, k6 or k8")
        if tern:
            raise LowbitError(f"ternary weights have one scale per group, no two-level scales: '{text}'", "drop the 'k' after the group")
    codebook = m.group("cb") is not None
    if codebook and (tern or bits == 8 or m.group("sym") is not None):
        raise LowbitError(f"codebook weights ('cb') are w4, w3 or w2 with no zero point or minimum: '{text}'", "use e.g. w3cb or w4cb-sp0.5")
    act = "a16"
    if m.group("act") is not None:
        act = f"a{m.group('act')}"
        if act not in ACT_MODES:
            raise LowbitError(f"unsupported activation mode '{act}' in quant spec '{text}'", "use a16, a8, afp8, amx8, amxfp4 or a32")
    symmetric = m.group("sym") not in ("asym", "min")
    minimum = m.group("sym") == "min"
    if tern and not symmetric:
        raise LowbitError(f"ternary weights are always symmetric, got '{text}'", f"drop the '-{m.group('sym')}' suffix")
    outliers = 0.0
    if m.group("sp") is not None:
        outliers = float(m.group("sp"))
        if not 0 < outliers <= MAX_OUTLIER_PCT:
            raise LowbitError(f"outlier fraction -sp{m.group('sp')} in quant spec '{text}' is outside (0, {MAX_OUTLIER_PCT:g}] percent", "use e.g. -sp0.5 (half a percent of each row)")
    return QuantSpec(bits=bits, group_size=group, act=act, symmetric=symmetric, ternary=tern, minimum=minimum, sub_bits=sub_bits, outliers=outliers,
                     codebook=codebook)


def _fp_spec(text: str, m, fp: str) -> QuantSpec:
    from compiler.quant.floatfmt import BITS, FORMATS

    if m.group("sub") is not None or m.group("cb") is not None or m.group("pc") is not None or m.group("sym") is not None:
        raise LowbitError(f"{fp} has its own scales and no zero point: '{text}'", f"use {fp}, {fp}a8 or {fp}-sp0.5")
    group = FORMATS[fp]
    if m.group("group") is not None:
        group = int(m.group("group"))
        free = fp in ("nf4", "fp8")  # the formats whose group is a choice (fp8: per channel unless given)
        if not free or group not in GROUP_SIZES:
            raise LowbitError(f"{fp} groups are fixed at {FORMATS[fp]} ('{text}')" if not free else f"unsupported group size {group} in '{text}'",
                              f"drop the group: {fp}" if not free else f"use {fp}g32, {fp}g64 or {fp}g128")
    act = "a16"
    if m.group("act") is not None:
        act = f"a{m.group('act')}"
        if act not in ACT_MODES:
            raise LowbitError(f"unsupported activation mode '{act}' in quant spec '{text}'", "use a16, a8, afp8, amx8, amxfp4 or a32")
    outliers = 0.0
    if m.group("sp") is not None:
        outliers = float(m.group("sp"))
        if not 0 < outliers <= MAX_OUTLIER_PCT:
            raise LowbitError(f"outlier fraction -sp{m.group('sp')} in quant spec '{text}' is outside (0, {MAX_OUTLIER_PCT:g}] percent", "use e.g. -sp0.5")
    return QuantSpec(bits=BITS[fp], group_size=group, act=act, codebook=True, fp=fp, outliers=outliers)
