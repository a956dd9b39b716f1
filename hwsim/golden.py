"""Integer golden model of the lowbit accelerator arrays (`lut-tc`, `mixpe`, `mac`), pure numpy.

This module is the bit-level definition every RTL testbench (rtl/tb) checks against and the cycle-level
hwsim reuses. All three arrays compute the same integer result from the same integer inputs; they differ
only in *how* (table lookups, shift-and-add, or dequantize-and-multiply), and this module implements each
"how" as well, so tests can show they agree with the plain MAC form (the numeric contract of docs/DESIGN.md).

Notation: a job ("tile") has M activation rows, N output channels and KT = NG * G input features, in NG
weight groups of G consecutive features. Indices m (row), n (column / output channel), k (feature),
j (group).

1. Weights (as stored by compiler.quant.qweight.QuantizedWeight)
   code q[n,k]: unsigned B bits, 0 <= q <= 2^B - 1 (B = 1..4; ternary: B = 2 and q = t + 1 in {0,1,2}).
   zero z[n,j]: unsigned B bits (symmetric: 2^(B-1); ternary: 1).  Integer weight  w'[n,k] = q - z[n,j],
   |w'| <= 2^B - 1, so w' needs B + 1 bits two's complement.

1b. E2M1 weights (MXFP4, NVFP4; ArrayConfig.weight_format "e2m1").  code q[n,k]: the 4-bit E2M1 bit pattern
   (sign q_3, exponent e = q_2 q_1, mantissa m = q_0), value 0.5 m (e = 0) or (1 + m/2) 2^(e-1), negated for
   q_3 = 1 (code 8 is -0).  The array's integer weight is twice the value,
       w'[n,k] = E2M1_W2[q] in {0, +-1, +-2, +-3, +-4, +-6, +-8, +-12}      (codes 0..7: 0 1 2 3 4 6 8 12)
   an exact integer, and no zero point (the zero field is absent from the ports).  |w'| <= 12 replaces
   2^B - 1 in every bound below (ArrayConfig.w_max).  The group scale s (MXFP4: E8M0, a power of two; NVFP4:
   fl32(t x E4M3), the stored float32) enters the dyadic epilogue (section 4) as s / 2, which is a power of two
   again for MXFP4 (mant = 2^(MW-1): exact) and an MW-bit mantissa otherwise, like any integer group's scale.
   LUT form: w' + 16 in 4..28 as five unsigned planes with zero point 16 (c = 2^5 - 1 - 32 = -1, a subtraction
   of S): bipolar digits need every plane digit of a weight to be +-1, which a sign-magnitude weight is not
   (its digits are -1, 0, +1: two lookups a plane), so one more plane (5 cycles a beat for 4-bit codes) is the
   cheaper way; the offset binary is w' in 5-bit two's complement with its top bit inverted.
   Shift-and-add form: |w'| = (e > 0 ? 2^e : 0) + (m ? 2^max(e-1, 0) : 0), so a * w' is at most two shifted
   copies of a (3 = 2 + 1, 6 = 4 + 2, 12 = 8 + 4) and one conditional negation, selected by the code's bits.
   MAC form: wd = w' * mant, multiplied as for integer codes.

2. Activations, integer operand a[m,k] of AW bits two's complement (-2^(AW-1) .. 2^(AW-1)-1)
   - A8:  a = qa = clamp(rint(x / sa), -127, 127) (per-token scale sa, applied off-array); AW = 8.
          (-128 is accepted by the hardware and by this model; the widths below cover it.)
   - A16: block floating point (BFP).  One shared exponent per (row m, weight group j): the BFP block is
          the weight group, so the activation exponent is folded into the same per-group epilogue.
          amax = max |x| over the block;  ea = floor(log2 amax) + 1 (so |x| < 2^ea), ea = 0 if amax = 0;
          a = clamp(rint(x * 2^(AB - 1 - ea)), -(2^(AB-1) - 1), 2^(AB-1) - 1),   AW = AB = `bfp_bits`
          (default 12: a sign and 11 significant bits, fp16's precision for the block's largest value).
          rint = round half to even.  x ~= a * 2^(ea - (AB-1));  |x - a*2^(ea-AB+1)| <= 2^(ea-AB+1)
          (<= 1/2 ulp, 1 ulp only where rounding reached 2^(AB-1) and was clamped).
          Exponents are then made relative to the row's largest: EA[m] = max_j ea[m,j],
          da[m,j] = EA[m] - ea[m,j] (unsigned SW bits); a block whose da would exceed 2^SW - 1 is encoded
          with ea = EA - (2^SW - 1) instead (its mantissas get smaller, the value stays right).
          A8 drives da = 0.

3. Group accumulator (exact, the contract's acc):  acc[m,n,j] = sum_{k in j} a[m,k] * (q[n,k] - z[n,j]).
   |acc| <= G * 2^(AW-1) * (2^B - 1) =: Ab;  ACCW = bitlen(Ab) + 1 bits signed hold it with no overflow.

   LUT form (lut-tc).  K activations per table (paper default K = 4).  Write q = sum_b 2^b q_b with
   bit-planes q_b in {0,1} and bipolar digits u_b = 2 q_b - 1 in {-1,+1}.  Then
       2 q = sum_b 2^b u_b + (2^B - 1)
       2 (q - z) = sum_b 2^b u_b + c,        c[n,j] = 2^B - 1 - 2 z[n,j]   (|c| <= 2^B - 1)
       2 acc = sum_b 2^b T_b + c * S,        T_b[m,n] = sum_k a[m,k] u_b[n,k],  S[m,j] = sum_{k in j} a[m,k]
   so acc = (acc2 + c*S) >> 1 with acc2 = sum_b 2^b T_b (the bit-serial shift-accumulate: plane b in
   cycle b, shifted left by b), and acc2 + c*S is always even (the >> 1 is exact).  Symmetric weights
   have c = -1 (a subtraction); S is one number per row and group, shared by all N columns, so the
   correction is one small (B+1)-bit x ACCW multiply per output per group, done in the epilogue.
   The table: for one K-chunk of one row, the 2^K bipolar sums T16[i] = sum_t a_t (2 i_t - 1) are
   antisymmetric (T16[~i] = -T16[i]), so only the 2^(K-1) entries with i_0 = 1 are stored:
       T8[e] = a_0 + sum_{t=1}^{K-1} (e_{t-1} ? +a_t : -a_t),   e = 0 .. 2^(K-1) - 1
   and a K-bit weight slice w (bit t = plane bit of feature t of the chunk) reads
       w_0 = 1:  T8[w[K-1:1]]          w_0 = 0:  -T8[~w[K-1:1]]          (table symmetrization)
   S of the chunk is T8[2^(K-1) - 1] (all digits +1): the table unit produces it for free.
   Entry width TW = bitlen(K * 2^(AW-1)) + 1 (covers the negation).
   ArrayConfig.sym False (the full table): all 2^K entries T16[i] are stored and w reads T16[w] directly
   (no sign logic); S is T16[2^K - 1].  Both tables give the same T_b, so acc is unchanged.
   Where the tables come from (ArrayConfig.table): "build", the array forms them from each beat's
   activations; "stream", the beat carries them instead of the activations (port in_tbl, 5 below), as the
   program's fused precompute wrote them: exactly lut_tables(a) of the chunk, so Y is the same.

   Shift-and-add form (mixpe).  w' = q - z as B+1 bit two's complement w'_0 .. w'_B:
       a * w' = sum_{b<B} w'_b (a << b) - w'_B (a << B)     (muxes and adders, no multiplier)

   Dequantize-then-multiply form (mac).  Each weight is dequantized to an integer wd = (q - z) * mant
   (the dyadic mantissa below, B+1+MW bits) and multiplied by a with an ordinary multiplier; the
   group's sum is then P = sum_k a * wd = acc * mant exactly, so it meets the epilogue below after its
   multiply.

4. Dyadic per-group dequantization (epilogue, integer only).  Weight scales s[n,j] > 0 (float32) become
       mant[n,j]: unsigned MW bits (default 16),   d[n,j]: unsigned SW bits (default 5),
       E[n]: channel exponent (kept by software, never seen by the array)
   with s ~= mant * 2^(E[n] - d - (MW - 1)).  Encoding: e = floor(log2 s) (frexp), E[n] = max_j e (after
   the renormalization below), d = E - e, mant = rint(s * 2^(MW-1-e)) in [2^(MW-1), 2^MW]; a mantissa
   that rounds up to 2^MW becomes 2^(MW-1) with e + 1.  A group with E - e > 2^SW - 1 uses
   e = E - (2^SW - 1) (smaller mantissa, right value).  s = 0 gives mant = 0.
   Relative error of the scale: <= 2^-MW for every group with d < 2^SW - 1 (1.5e-5 at MW = 16).
   Per output the array computes, for each group in order,
       P   = acc * mant                            (PW = bitlen(Ab * (2^MW - 1)) + 1 bits, exact)
       sh  = d[n,j] + da[m,j]                      (0 .. 2^(SW+1) - 2)
       v   = rshift_round(P, sh) = floor((P + 2^(sh-1)) / 2^sh)   (sh > 0; v = P for sh = 0)
             i.e. round half up (towards +inf) on the arithmetic shift; v = 0 for every sh >= PW
       Y[m,n] = sum_j v                            (YW = PW + GB bits, GB = 8 guard bits: exact for
                                                    up to 2^GB groups; beyond, two's complement wrap)
   and the float output is
       y[m,n] = Y * 2^(E[n] - (MW-1)) * ( A8: sa[m]   |   A16: 2^(EA[m] - (AB-1)) ).
   Error of Y against the exact sum of s * 2^.. * acc: per group <= |acc| * 2^(e'-MW) (scale rounding,
   e' the encoded exponent) + 1/2 unit of Y (shift rounding).

4b. Scale-and-minimum groups (llama.cpp's Q4_1 and K-quants, w = s q + m with a float minimum m that is
   not a multiple of s; the contract's qlinear attr `mins`).  The zero points are 0 (q - z = q), and the
   minimums m[n,j] (float32, any sign) become a second signed dyadic number per group over the SAME
   channel exponent E[n]:
       mm[n,j]: signed, |mm| < 2^MW (MW + 1 bits two's complement),   dm[n,j]: unsigned SW bits,
       m ~= mm * 2^(E[n] - dm - (MW - 1)),
   encoded exactly like the scales (frexp exponent, rint mantissa, round-up renormalization, a group
   whose E - e exceeds 2^SW - 1 uses e = E - (2^SW - 1)), the sign carried by mm; m = 0 gives mm = 0.
   E[n] is the largest exponent over the row's scales AND minimums (`dyadic_affine`), so no mantissa
   overflows; scales keep their 2^-MW relative error while d < 2^SW - 1.
   Since w = s q + m, sum_k a w = s acc + m S with S[m,j] = sum_{k in j} a[m,k] (the group's activation
   sum: SUMW bits, exact, one number per row and group shared by all N columns: formed once per row tile,
   the lut-tc table unit already has it).  Per output and group the epilogue adds a second term:
       Pm  = S * mm                                (PMW = bitlen(G 2^(AW-1) (2^MW - 1)) + 1 <= PW bits, exact)
       vm  = rshift_round(Pm, dm[n,j] + da[m,j])   (the same rounding shift as v)
       Y[m,n] = sum_j (v + vm)
   and y is formed from Y exactly as below (A8: sa S = the contract's sa xs; A16: S 2^(EA-da-(AB-1)) =
   the group sum of the BFP activations).  |v + vm| < 2^PW, so Y is exact for up to 2^(GB-1) groups (the
   compiler cuts K there for such layers).  Error against the contract: the scale and minimum roundings
   (<= 2^-MW relative each) + 1/2 unit of Y per term.

5. Array I/O (all three designs; see rtl/gen/common.py for the ports).  A job streams KT / K input beats,
   one K-chunk each: a[m, k0..k0+K-1] for all rows (table "stream": their tables lut_tables(a) instead),
   codes q[n, k0..k0+K-1] for all columns; the group
   fields z, mant, d (per column) and da (per row) are read on the first beat of each group; `last` marks
   the job's final beat.  The output streams Y in row-major slot order m*N + n, `lanes` values per beat.
   Arrays with minimums (4b) also read mm and dm per column on a group's first beat.

Everything here is exact int64 arithmetic (all widths above stay below 63 bits for the supported
parameters; ArrayConfig checks it).

6. FP16 activations (the papers' own arrays; hwsim/designs/_fp16.py, docs/hwsim/fp16_arrays.md).  Not the
   integer contract above: activations are IEEE binary16 bit patterns, sums are IEEE binary32.  The last
   section of this module (`fp16_mac_tile`) defines every rounding step in its docstring.  The same arrays
   take bfloat16 instead (act="bf16": 1 sign, 8 exponent, 7 fraction bits, bias 127, subnormals, inf,
   NaN): activations, scales and the 16-bit intermediates (mac's weights, lut's table entries) are then
   bf16, sums stay binary32; each tile function's docstring states what changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass, field

import numpy as np

if TYPE_CHECKING:
    from hwsim.config import ArrayConfig

# ----------------------------------------------------------------------------------------------------
# Group accumulators: MAC form (the reference), LUT form, shift-and-add form


def as_int64(x) -> np.ndarray:
    """x as an int64 array (the exact arithmetic of this module)."""
    return np.asarray(x).astype(np.int64)


def int_weights(codes: np.ndarray, zeros: np.ndarray, group: int) -> np.ndarray:
    """w' = q - z per element, int64 [N, KT]."""
    return as_int64(codes) - np.repeat(as_int64(zeros), group, axis=1)


# twice the E2M1 value of each code (docstring 1b)
E2M1_W2 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int64)
E2M1_PLANES = 5  # the LUT form's offset-binary planes of w' + 16
E2M1_OFFSET = 1 << (E2M1_PLANES - 1)


def e2m1_weights(codes: np.ndarray) -> np.ndarray:
    """w' = 2 x the E2M1 value of each 4-bit code, int64 (docstring 1b)."""
    return E2M1_W2[as_int64(codes) & 15]


def weight_values(cfg: ArrayConfig, codes, zeros) -> np.ndarray:
    """The integer weights w' [N, KT] of `cfg`'s weight format: q - z, or the E2M1 decoding (zeros unused)."""
    return e2m1_weights(codes) if cfg.e2m1 else int_weights(codes, zeros, cfg.group)


def epilogue_scales(cfg: ArrayConfig, scales) -> np.ndarray:
    """The float scales the dyadic epilogue holds: s, or s / 2 for E2M1 weights (w' is twice the value; exact)."""
    s = np.asarray(scales, dtype=np.float64)
    return s / 2 if cfg.e2m1 else s


def dot_group_acc(a: np.ndarray, wp: np.ndarray, group: int) -> np.ndarray:
    """acc[m,n,j] = sum_{k in j} a[m,k] * w'[n,k] for integer weights w' [N, KT], int64 [M, N, NG]."""
    a = as_int64(a)
    wp = as_int64(wp)
    m, kt = a.shape
    ng = kt // group
    return np.einsum("mjg,njg->mnj", a.reshape(m, ng, group), wp.reshape(wp.shape[0], ng, group))


def mac_group_acc(a: np.ndarray, codes: np.ndarray, zeros: np.ndarray, group: int) -> np.ndarray:
    """acc[m,n,j] = sum_{k in j} a[m,k] * (q[n,k] - z[n,j]), int64 [M, N, NG] (MAC form)."""
    return dot_group_acc(a, int_weights(codes, zeros, group), group)


def lut_tables(a: np.ndarray, K: int = 4, sym: bool = True) -> np.ndarray:
    """Tables per K-chunk c, int64 [M, C, E]: symmetric T8[m, c, e] = a_0 + sum_{t>=1} (bit t-1 of e ? a_t : -a_t)
    (E = 2^(K-1)), or with sym False the full T16[m, c, i] = sum_t (bit t of i ? a_t : -a_t) (E = 2^K)."""
    a = as_int64(a)
    m, kt = a.shape
    ch = a.reshape(m, kt // K, K)
    idx = np.arange(1 << (K - 1)) * 2 + 1 if sym else np.arange(1 << K)  # T8[e] = T16[2e + 1]
    sign = np.where((idx[:, None] >> np.arange(K)[None, :]) & 1, 1, -1).astype(np.int64)
    return np.einsum("mct,et->mce", ch, sign)


def lut_activations(tables: np.ndarray, K: int = 4, sym: bool = True) -> np.ndarray:
    """The activations [M, C*K] whose lut_tables are `tables` [M, C, E] (what a streamed table stands for).
    With S the all-ones entry, flipping feature t's digit gives S - 2 a_t; ValueError if `tables` are not
    lut_tables of any integer activations."""
    t = as_int64(tables)
    m, c, e = t.shape
    if e != (1 << (K - 1) if sym else 1 << K):
        raise ValueError(f"{e} table entries, expected {(1 << (K - 1)) if sym else (1 << K)} for K={K} sym={sym}")
    top = e - 1
    S = t[:, :, top]
    a = np.zeros((m, c, K), dtype=np.int64)
    for f in range(1 if sym else 0, K):
        a[:, :, f] = (S - t[:, :, top ^ (1 << (f - 1 if sym else f))]) // 2
    if sym:  # feature 0's digit is always +1 in T8: a_0 is what is left of S
        a[:, :, 0] = S - a[:, :, 1:].sum(axis=2)
    a = a.reshape(m, c * K)
    if not np.array_equal(lut_tables(a, K, sym), t):
        raise ValueError("the tables are not lut_tables of any activations")
    return a


def lut_lookup(table: np.ndarray, wbits: np.ndarray, K: int = 4, sym: bool = True) -> np.ndarray:
    """Read tables with K-bit weight slices: symmetric tables with the sign trick, full tables directly.

    table [M, C, E], wbits [N, C, K] in {0,1} -> [M, N, C] = sum_t a_t (2 w_t - 1).
    """
    m, c, _ = table.shape
    if not sym:
        idx = np.zeros(wbits.shape[:2], dtype=np.int64)
        for t in range(K):
            idx |= as_int64(wbits[:, :, t]) << t
        return np.take_along_axis(table[:, None, :, :], idx[None, :, :, None].repeat(m, axis=0), axis=3)[..., 0]
    half = (1 << (K - 1)) - 1
    idx = np.zeros(wbits.shape[:2], dtype=np.int64)
    for t in range(1, K):
        idx |= as_int64(wbits[:, :, t]) << (t - 1)
    w0 = wbits[:, :, 0].astype(bool)
    eff = np.where(w0, idx, (~idx) & half)  # [N, C]
    # gather table[m, c, eff[n, c]]
    vals = np.take_along_axis(table[:, None, :, :], eff[None, :, :, None].repeat(m, axis=0), axis=3)[..., 0]
    return np.where(w0[None], vals, -vals)


def lut_group_acc2(a: np.ndarray, codes: np.ndarray, bits: int, group: int, K: int = 4, sym: bool = True):
    """LUT-TC bit-serial form: (acc2 [M,N,NG], S [M,NG]) with acc2 = sum_b 2^b T_b, S = group row sums."""
    a = as_int64(a)
    codes = as_int64(codes)
    m, kt = a.shape
    n = codes.shape[0]
    ng, cpg = kt // group, group // K
    table = lut_tables(a, K, sym)  # [M, C, E]
    acc2 = np.zeros((m, n, kt // K), dtype=np.int64)
    for b in range(bits):  # one plane per cycle in hardware
        plane = ((codes >> b) & 1).reshape(n, kt // K, K)
        acc2 += lut_lookup(table, plane, K, sym) << b
    acc2 = acc2.reshape(m, n, ng, cpg).sum(axis=3)
    S = table[:, :, -1].reshape(m, ng, cpg).sum(axis=2)  # the all-ones entry
    return acc2, S


def lut_correction(zeros: np.ndarray, bits: int) -> np.ndarray:
    """c[n,j] = 2^B - 1 - 2 z[n,j]."""
    return (1 << bits) - 1 - 2 * as_int64(zeros)


def lut_group_acc(a, codes, zeros, bits: int, group: int, K: int = 4, sym: bool = True) -> np.ndarray:
    """acc via the LUT form: (acc2 + c*S) >> 1, checking the sum is even."""
    acc2, S = lut_group_acc2(a, codes, bits, group, K, sym)
    t = acc2 + lut_correction(zeros, bits)[None, :, :] * S[:, None, :]
    if np.any(t & 1):
        raise AssertionError("LUT form: acc2 + c*S is odd; the algebra is violated")
    return t >> 1


def shift_add_mul(a: np.ndarray, wp: np.ndarray, bits: int) -> np.ndarray:
    """a * w' by shift-and-add over the B+1 two's complement bits of w' (MixPE PE), elementwise."""
    a = as_int64(a)
    u = as_int64(wp) & ((1 << (bits + 1)) - 1)
    out = np.zeros(np.broadcast(a, u).shape, dtype=np.int64)
    for b in range(bits):
        out += np.where((u >> b) & 1, a << b, 0)
    out -= np.where((u >> bits) & 1, a << bits, 0)
    return out


def mixpe_group_acc(a, codes, zeros, bits: int, group: int) -> np.ndarray:
    a = as_int64(a)
    wp = int_weights(codes, zeros, group)
    m, kt = a.shape
    n = wp.shape[0]
    ng = kt // group
    prod = shift_add_mul(a[:, None, :], wp[None, :, :], bits)  # [M, N, KT]
    return prod.reshape(m, n, ng, group).sum(axis=3)


def lut_e2m1_group_acc(a, codes, group: int, K: int = 4, sym: bool = True) -> np.ndarray:
    """acc of E2M1 codes via the LUT form (docstring 1b): the five planes of w' + 16, zero point 16 (c = -1)."""
    u = e2m1_weights(codes) + E2M1_OFFSET
    zeros = np.full((u.shape[0], u.shape[1] // group), E2M1_OFFSET, np.int64)
    return lut_group_acc(a, u, zeros, E2M1_PLANES, group, K, sym)


def e2m1_shift_add_mul(a: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """a * w' for E2M1 codes as at most two shifted copies of a and a conditional negation (docstring 1b), elementwise."""
    a = as_int64(a)
    q = as_int64(codes) & 15
    e, m, s = (q >> 1) & 3, q & 1, q >> 3
    t1 = np.where(e > 0, a << e, 0)
    t2 = np.where(m == 1, a << np.maximum(e - 1, 0), 0)
    return np.where(s == 1, -(t1 + t2), t1 + t2)


def mixpe_e2m1_group_acc(a, codes, group: int) -> np.ndarray:
    a = as_int64(a)
    m, kt = a.shape
    n = codes.shape[0]
    prod = e2m1_shift_add_mul(a[:, None, :], as_int64(codes)[None, :, :])  # [M, N, KT]
    return prod.reshape(m, n, kt // group, group).sum(axis=3)


def mac_dequant_group_p(a, codes, zeros, mant, group: int, e2m1: bool = False) -> np.ndarray:
    """MAC baseline: P = sum_k a * (w' * mant) per group, int64 [M, N, NG] (= acc * mant); w' = q - z, or the
    E2M1 decoding (docstring 1b)."""
    a = as_int64(a)
    wp = e2m1_weights(codes) if e2m1 else int_weights(codes, zeros, group)
    wd = wp * np.repeat(as_int64(mant), group, axis=1)
    m, kt = a.shape
    n = wd.shape[0]
    ng = kt // group
    return np.einsum("mjg,njg->mnj", a.reshape(m, ng, group), wd.reshape(n, ng, group))


# ----------------------------------------------------------------------------------------------------
# Number formats: dyadic scales, BFP activations


def dyadic_scales(scales: np.ndarray, mant_bits: int = 16, shift_bits: int = 5):
    """float scales [N, NG] (>= 0) -> (mant uint64 [N,NG], d int64 [N,NG], E int64 [N]); see docstring 4."""
    s = np.asarray(scales, dtype=np.float64)
    if np.any(s < 0) or not np.all(np.isfinite(s)):
        raise ValueError("scales must be finite and >= 0")
    dmax = (1 << shift_bits) - 1
    _, ex = np.frexp(s)  # s = f * 2^ex, f in [0.5, 1)
    e = ex.astype(np.int64) - 1  # floor(log2 s)
    mant = np.rint(np.ldexp(s, (mant_bits - 1) - e))
    up = mant >= (1 << mant_bits)
    e = np.where(up, e + 1, e)
    nz = s > 0
    E = np.where(nz, e, np.iinfo(np.int64).min).max(axis=1)
    E = np.where(np.any(nz, axis=1), E, 0)
    e_enc = np.maximum(e, E[:, None] - dmax)
    mant = np.rint(np.ldexp(s, (mant_bits - 1) - e_enc))
    mant = np.where(nz, mant, 0).astype(np.int64)
    if np.any(mant >= (1 << mant_bits)):
        raise AssertionError("dyadic mantissa overflow")
    d = np.where(nz, E[:, None] - e_enc, 0).astype(np.int64)
    return mant, d, E.astype(np.int64)


def _dyadic_exponents(v: np.ndarray, mant_bits: int) -> np.ndarray:
    """floor(log2 v) per element of v > 0, plus one where the MW-bit mantissa would round up to 2^MW."""
    _, ex = np.frexp(v)
    e = ex.astype(np.int64) - 1
    return np.where(np.rint(np.ldexp(v, (mant_bits - 1) - e)) >= (1 << mant_bits), e + 1, e)


def _dyadic_encode(v: np.ndarray, E: np.ndarray, mant_bits: int, shift_bits: int):
    """|v| [N, NG] over channel exponents E [N] -> (mant, d) int64 (docstring 4: clamped shift, v = 0 -> 0)."""
    nz = v > 0
    e = _dyadic_exponents(np.where(nz, v, 1.0), mant_bits)
    e_enc = np.maximum(e, E[:, None] - ((1 << shift_bits) - 1))
    mant = np.where(nz, np.rint(np.ldexp(v, (mant_bits - 1) - e_enc)), 0).astype(np.int64)
    if np.any(mant >= (1 << mant_bits)):
        raise AssertionError("dyadic mantissa overflow")
    return mant, np.where(nz, E[:, None] - e_enc, 0).astype(np.int64)


def dyadic_affine(scales: np.ndarray, mins: np.ndarray, mant_bits: int = 16, shift_bits: int = 5):
    """Scales (>= 0) and minimums (any sign) [N, NG] -> (mant, d, mm, dm, E), docstring 4b: both dyadic
    over one channel exponent E[n] (the largest exponent of the row's scales and |minimums|); mm signed."""
    s = np.asarray(scales, dtype=np.float64)
    m = np.asarray(mins, dtype=np.float64)
    if np.any(s < 0) or not np.all(np.isfinite(s)) or not np.all(np.isfinite(m)):
        raise ValueError("scales must be finite and >= 0, minimums finite")
    am = np.abs(m)
    both = np.concatenate([s, am], axis=1)
    nz = both > 0
    e = np.where(nz, _dyadic_exponents(np.where(nz, both, 1.0), mant_bits), np.iinfo(np.int64).min)
    E = np.where(np.any(nz, axis=1), e.max(axis=1), 0).astype(np.int64)
    mant, d = _dyadic_encode(s, E, mant_bits, shift_bits)
    mm, dm = _dyadic_encode(am, E, mant_bits, shift_bits)
    return mant, d, np.where(m < 0, -mm, mm).astype(np.int64), dm, E


def dyadic_value(mant, d, E, mant_bits: int = 16) -> np.ndarray:
    """The scales a dyadic encoding represents, float64 [N, NG]."""
    return np.ldexp(as_int64(mant).astype(np.float64), (E[:, None] - as_int64(d) - (mant_bits - 1)).astype(np.int64))


def bfp_quantize(x: np.ndarray, group: int, bfp_bits: int = 12, shift_bits: int = 5):
    """A16 -> BFP: x [M, KT] float -> (a int64 [M,KT], da int64 [M,NG], EA int64 [M]); docstring 2."""
    x = np.asarray(x, dtype=np.float64)
    m, kt = x.shape
    ng = kt // group
    xb = x.reshape(m, ng, group)
    amax = np.abs(xb).max(axis=2)
    _, ex = np.frexp(amax)  # amax = f*2^ex, f in [0.5,1): floor(log2 amax) + 1 = ex
    ea = np.where(amax > 0, ex, 0).astype(np.int64)
    EA = np.where(amax > 0, ea, np.iinfo(np.int64).min).max(axis=1)
    EA = np.where(np.any(amax > 0, axis=1), EA, 0)
    ea = np.maximum(ea, EA[:, None] - ((1 << shift_bits) - 1))
    lim = (1 << (bfp_bits - 1)) - 1
    a = np.rint(np.ldexp(xb, ((bfp_bits - 1) - ea)[:, :, None]))
    a = np.clip(a, -lim, lim).astype(np.int64).reshape(m, kt)
    return a, (EA[:, None] - ea).astype(np.int64), EA.astype(np.int64)


def bfp_value(a, da, EA, group: int, bfp_bits: int = 12) -> np.ndarray:
    """The floats a BFP encoding represents, float64 [M, KT]."""
    ea = EA[:, None] - as_int64(da)
    return np.ldexp(as_int64(a).astype(np.float64), np.repeat(ea - (bfp_bits - 1), group, axis=1))


def quantize_a8(x: np.ndarray):
    """Per-token int8 (the contract's A8): qa = clamp(rint(x / sa), -127, 127), sa = absmax / 127."""
    x = np.asarray(x, dtype=np.float32)
    sa = np.abs(x).max(axis=1) / np.float32(127.0)
    sa = np.where(sa > 0, sa, np.float32(1.0)).astype(np.float32)
    qa = np.clip(np.rint(x / sa[:, None]), -127, 127).astype(np.int64)
    return qa, sa


# ----------------------------------------------------------------------------------------------------
# Epilogue and the whole tile


def rshift_round(p: np.ndarray, sh: np.ndarray) -> np.ndarray:
    """floor((p + 2^(sh-1)) / 2^sh) for sh > 0, p for sh = 0 (round half up), int64; sh <= 62."""
    p = as_int64(p)
    sh = as_int64(sh)
    half = np.where(sh > 0, np.left_shift(np.int64(1), np.maximum(sh - 1, 0)), 0)
    return (p + half) >> sh


def wrap_signed(x: np.ndarray, width: int) -> np.ndarray:
    x = as_int64(x)
    mod = np.int64(1) << width
    return ((x + (mod >> 1)) & (mod - 1)) - (mod >> 1)


def epilogue(p: np.ndarray, d: np.ndarray, da: np.ndarray, y_bits: int) -> np.ndarray:
    """Y[m,n] = sum_j rshift_round(P[m,n,j], d[n,j] + da[m,j]) (wrapped to y_bits)."""
    sh = as_int64(d)[None, :, :] + as_int64(da)[:, None, :]
    return wrap_signed(rshift_round(p, sh).sum(axis=2), y_bits)


def group_act_sums(a: np.ndarray, group: int) -> np.ndarray:
    """S[m,j] = sum_{k in j} a[m,k], int64 [M, NG]: the per-row group activation sums (docstring 3, 4b)."""
    a = as_int64(a)
    return a.reshape(a.shape[0], -1, group).sum(axis=2)


def min_terms(S: np.ndarray, mm: np.ndarray, dm: np.ndarray, da: np.ndarray) -> np.ndarray:
    """vm[m,n,j] = rshift_round(S[m,j] * mm[n,j], dm[n,j] + da[m,j]), int64 [M, N, NG] (docstring 4b)."""
    pm = as_int64(S)[:, None, :] * as_int64(mm)[None, :, :]
    return rshift_round(pm, as_int64(dm)[None, :, :] + as_int64(da)[:, None, :])


def min_prod_bits(cfg: ArrayConfig) -> int:
    """PMW: signed width of Pm = S * mm (docstring 4b)."""
    return (cfg.group * (1 << (cfg.act_bits - 1)) * ((1 << cfg.mant_bits) - 1)).bit_length() + 1


def exact_groups(cfg: ArrayConfig, mins: bool = False) -> int:
    """Groups one job may hold with Y exact: 2^GB, or 2^(GB-1) with minimums (docstring 4, 4b)."""
    return 1 << (cfg.guard_bits - (1 if mins else 0))


def group_acc(cfg: ArrayConfig, a, codes, zeros) -> np.ndarray:
    """The design's own integer group accumulator (all equal to mac_group_acc; tests show it)."""
    return cfg.design_record.group_acc(cfg, a, codes, zeros)


def tile_y(cfg: ArrayConfig, a, codes, zeros, mant, d, da, mm=None, dm=None) -> np.ndarray:
    """The array's output Y [M, N] (int64) for one job, computed the way `cfg.design` computes it.

    a [M, KT] ints (AW bits), codes [N, KT], zeros/mant/d [N, NG], da [M, NG]; with minimums (docstring
    4b) mm/dm [N, NG] add each group's S * mm term.
    """
    rec = cfg.design_record
    if rec.group_p is not None:
        p = rec.group_p(cfg, a, codes, zeros, mant)
    else:
        p = rec.group_acc(cfg, a, codes, zeros) * as_int64(mant)[None, :, :]
    if mm is None:
        return epilogue(p, d, da, cfg.y_bits)
    v = rshift_round(p, as_int64(d)[None, :, :] + as_int64(da)[:, None, :])
    vm = min_terms(group_act_sums(a, cfg.group), mm, dm, da)
    return wrap_signed((v + vm).sum(axis=2), cfg.y_bits)


def output_beats(cfg: ArrayConfig, y: np.ndarray) -> list[list[int]]:
    """Y [M, N] in the array's output order: beats of `lanes` values, slots row-major."""
    flat = as_int64(y).reshape(-1)
    return [[int(v) for v in flat[i : i + cfg.lanes]] for i in range(0, flat.size, cfg.lanes)]


@dataclass
class TileInputs:
    """Integer inputs of one job, in the array's formats, plus what turns Y back into floats."""

    a: np.ndarray  # [M, KT] int64
    codes: np.ndarray  # [N, KT]
    zeros: np.ndarray  # [N, NG]
    mant: np.ndarray  # [N, NG]
    d: np.ndarray  # [N, NG]
    da: np.ndarray  # [M, NG]
    E: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # [N]
    row_scale: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [M] float: sa or 2^(EA-(AB-1))
    mm: np.ndarray | None = None  # [N, NG] signed minimum mantissas (scale-and-minimum groups, docstring 4b)
    dm: np.ndarray | None = None  # [N, NG] their shifts

    @property
    def n_groups(self) -> int:
        return self.zeros.shape[1]

    @property
    def has_mins(self) -> bool:
        return self.mm is not None

    def y(self, cfg: ArrayConfig) -> np.ndarray:
        """tile_y of these inputs."""
        return tile_y(cfg, self.a, self.codes, self.zeros, self.mant, self.d, self.da, self.mm, self.dm)


def prepare_tile(cfg: ArrayConfig, x: np.ndarray, qw) -> TileInputs:
    """Real inputs -> array formats: x [M, KT] float activations, qw a QuantizedWeight [N, KT]."""
    if qw.group_size != cfg.group:
        raise ValueError(f"weight group {qw.group_size} != array group {cfg.group}")
    mm = dm = None
    if getattr(qw, "has_mins", False):
        mant, d, mm, dm, E = dyadic_affine(qw.scales, qw.mins, cfg.mant_bits, cfg.shift_bits)
    else:
        mant, d, E = dyadic_scales(epilogue_scales(cfg, qw.scales), cfg.mant_bits, cfg.shift_bits)
    if cfg.act == "a8":
        a, sa = quantize_a8(x)
        da = np.zeros((x.shape[0], qw.n_groups), dtype=np.int64)
        row = sa.astype(np.float64)
    else:
        a, da, EA = bfp_quantize(np.asarray(x, dtype=np.float16).astype(np.float64), cfg.group, cfg.bfp_bits, cfg.shift_bits)
        row = np.ldexp(1.0, EA - (cfg.bfp_bits - 1))
    return TileInputs(a=a, codes=as_int64(qw.codes), zeros=as_int64(qw.zeros), mant=mant, d=d, da=da, E=E, row_scale=row, mm=mm, dm=dm)


def y_to_float(cfg: ArrayConfig, y: np.ndarray, t: TileInputs) -> np.ndarray:
    """y[m,n] = Y * 2^(E[n] - (MW-1)) * row_scale[m] (float64)."""
    return np.ldexp(as_int64(y).astype(np.float64), t.E[None, :] - (cfg.mant_bits - 1)) * t.row_scale[:, None]


def random_tile(cfg: ArrayConfig, rng: np.random.Generator, n_groups: int = 1, kind: str = "random", mins: bool = False) -> TileInputs:
    """Random integer job inputs for `cfg` (kind: random | zeros | max | min | mixed-extreme | codes: every code
    in every column); mins: with
    scale-and-minimum fields (zero points 0, signed minimum mantissas mm and shifts dm, docstring 4b)."""
    M, N, G = cfg.M, cfg.N, cfg.group
    kt = G * n_groups
    amin, amax = -(1 << (cfg.act_bits - 1)), (1 << (cfg.act_bits - 1)) - 1
    qmax = 2 if cfg.ternary else (1 << cfg.bits) - 1
    top = 7 if cfg.e2m1 else qmax  # the code of the largest positive w' (E2M1: +6)
    smax = (1 << cfg.shift_bits) - 1
    a = rng.integers(amin, amax + 1, size=(M, kt))
    codes = rng.integers(0, qmax + 1, size=(N, kt))
    zeros = np.ones((N, n_groups), dtype=np.int64) if cfg.ternary else rng.integers(0, qmax + 1, size=(N, n_groups))
    mant = rng.integers(0, 1 << cfg.mant_bits, size=(N, n_groups))
    d = rng.integers(0, smax + 1, size=(N, n_groups))
    da = rng.integers(0, smax + 1, size=(M, n_groups)) if cfg.act == "a16" else np.zeros((M, n_groups), np.int64)
    if kind == "zeros":
        a[:] = 0
    elif kind in ("max", "min"):
        # accumulator limit: every product at its extreme, |acc| = G * 2^(AW-1) * (2^B-1) for 'min'
        a[:] = amin if kind == "min" else amax
        codes[:] = top
        zeros[:] = 1 if cfg.ternary else 0
        mant[:] = (1 << cfg.mant_bits) - 1
        d[:] = 0
        da[:] = 0
    elif kind == "mixed-extreme":
        a = rng.choice([amin, amax, 0], size=(M, kt))
        codes = rng.choice([0, 8, 7, 15] if cfg.e2m1 else [0, qmax], size=(N, kt))  # E2M1: +-0 and +-6
        zeros = np.ones_like(zeros) if cfg.ternary else rng.choice([0, qmax], size=(N, n_groups))
        mant = rng.choice([0, 1, (1 << cfg.mant_bits) - 1], size=(N, n_groups))
        d = rng.choice([0, 1, smax], size=(N, n_groups))
    elif kind == "codes":
        # every code (E2M1: -0 and +-6 included) in every column, against extreme activations
        codes = (np.arange(kt)[None, :] + np.arange(N)[:, None]) % (qmax + 1)
        a = rng.choice([amin, amax, -1, 1], size=(M, kt))
    if cfg.e2m1:
        zeros = np.zeros_like(zeros)  # no zero points (docstring 1b)
    t = TileInputs(a=as_int64(a), codes=as_int64(codes), zeros=as_int64(zeros), mant=as_int64(mant), d=as_int64(d), da=as_int64(da))
    if mins and not cfg.ternary and not cfg.e2m1:
        lim = (1 << cfg.mant_bits) - 1
        t.zeros = np.zeros_like(t.zeros)
        t.mm = as_int64(rng.integers(-lim, lim + 1, size=(N, n_groups)))
        t.dm = as_int64(rng.integers(0, smax + 1, size=(N, n_groups)))
        if kind in ("max", "min"):  # the extreme of both terms: |v + vm| at its bound
            t.mm[:] = lim  # same sign as the scale term for both signs of a
            t.dm[:] = 0
        elif kind == "mixed-extreme":
            t.mm = as_int64(rng.choice([-lim, 0, 1, lim], size=(N, n_groups)))
            t.dm = as_int64(rng.choice([0, 1, smax], size=(N, n_groups)))
    return t


# ----------------------------------------------------------------------------------------------------
# FP16 activations (docstring 6): IEEE arithmetic, defined step by step in fp16_mac_tile's docstring

F16_QNAN = 0x7E00  # the canonical quiet NaNs every NaN result is written as
F32_QNAN = 0x7FC00000
BF16_QNAN = 0x7FC0
ACT_FORMATS = ("fp16", "bf16")  # the arrays' 16-bit activation formats (act=)


def check_act(act: str) -> str:
    if act not in ACT_FORMATS:
        raise ValueError(f"activation format act={act!r} is not one of {', '.join(ACT_FORMATS)}")
    return act


def f16(bits) -> np.ndarray:
    """uint16 bit patterns -> float16 values."""
    return np.asarray(bits, dtype=np.int64).astype(np.uint16).view(np.float16)


def f16_bits(x) -> np.ndarray:
    """float16 values -> int64 bit patterns, NaNs as F16_QNAN."""
    x = np.asarray(x, dtype=np.float16)
    return np.where(np.isnan(x), F16_QNAN, x.view(np.uint16).astype(np.int64))


def f32_bits(x) -> np.ndarray:
    """float32 values -> int64 bit patterns, NaNs as F32_QNAN."""
    x = np.asarray(x, dtype=np.float32)
    return np.where(np.isnan(x), F32_QNAN, x.view(np.uint32).astype(np.int64))


def bf16(bits) -> np.ndarray:
    """bfloat16 bit patterns -> float32 values (exact: a bf16 pattern is the upper half of the fp32 one)."""
    u = np.asarray(bits, dtype=np.int64).astype(np.uint32) << np.uint32(16)
    return np.asarray(u, dtype=np.uint32).view(np.float32)


def bf16_bits(x) -> np.ndarray:
    """Round float32 (or narrower) or float64 values to bfloat16, int64 bit patterns: IEEE round to nearest,
    ties to even, on the bit pattern (numpy has no bfloat16); subnormal results kept (no flush), magnitudes
    from (2 - 2^-8) 2^127 up give +-inf, every NaN the canonical BF16_QNAN."""
    x = np.asarray(x)
    if x.dtype == np.float64:
        return _bf16_bits_f64(x)
    x = np.asarray(x, dtype=np.float32)  # float16 widens exactly
    u = x.view(np.uint32).astype(np.int64)
    # bf16 shares fp32's exponent field, so RNE to the upper 16 bits is one add: a carry out of the fraction
    # moves into the exponent (subnormal -> normal, largest finite -> inf) exactly as IEEE rounding does
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return np.where(np.isnan(x), BF16_QNAN, r)


def _bf16_bits_f64(x: np.ndarray) -> np.ndarray:
    """bf16_bits for float64, rounded once from the float64 value (not via float32, which would round twice)."""
    u = x.view(np.uint64)
    sign = (u >> np.uint64(63)).astype(np.int64) << 15
    mag = (u & np.uint64((1 << 63) - 1)).astype(np.int64)
    e, f = mag >> 52, mag & ((1 << 52) - 1)
    m = f | (1 << 52)  # float64 subnormals (below 2^-1022) round to 0 below: the shift is capped
    qe = np.maximum(e - 1023 - 7, -133)  # exponent of bf16's unit in the last place (subnormals: 2^-133)
    sh = np.clip(qe - (e - 1075), 1, 60)  # low bits of m to drop (>= 45)
    n = m >> sh
    rem = m & ((np.int64(1) << sh) - 1)
    half = np.int64(1) << (sh - 1)
    n = n + ((rem > half) | ((rem == half) & (n & 1 == 1)))
    n = np.where(e == 0, 0, n)
    pat = np.minimum(((qe + 133) << 7) + n, 0x7F80)  # the carry of n = 256 moves into the exponent; >= 0x7F80: inf
    pat = np.where(e == 2047, np.where(f == 0, 0x7F80, BF16_QNAN), pat)
    return np.where((e == 2047) & (f != 0), BF16_QNAN, pat | sign)


def act_f32(bits, act: str = "fp16") -> np.ndarray:
    """Activation-format bit patterns -> float32 values (exact widening)."""
    return bf16(bits) if check_act(act) == "bf16" else f16(bits).astype(np.float32)


def act_bits(x, act: str = "fp16") -> np.ndarray:
    """float32 / float64 values rounded to the activation format (RNE), int64 bit patterns, NaN canonical."""
    return bf16_bits(x) if check_act(act) == "bf16" else f16_bits(x)


def fp16_dequant(codes, zeros, scale_bits, group: int, act: str = "fp16") -> np.ndarray:
    """Weights dequantized to `act` bit patterns, int64 [N, KT]: w = fp16((q - z) * s), or bf16 (fp16_mac_tile
    step 1)."""
    wp = int_weights(codes, zeros, group).astype(np.float32)  # |q - z| <= 15: exact
    s = np.repeat(act_f32(scale_bits, act), group, axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        return act_bits(wp * s, act)  # the fp32 product is exact (or inf for bf16, where the rounding is inf too): one rounding


def fp32_tree(p: np.ndarray) -> np.ndarray:
    """Pairwise fp32 sum over the last axis (a power of two long): level by level, neighbours (2i, 2i+1)."""
    p = np.asarray(p, dtype=np.float32)
    while p.shape[-1] > 1:
        p = p[..., 0::2] + p[..., 1::2]
    return p[..., 0]


def fp16_mac_tile(x_bits, codes, zeros, scale_bits, group: int, K: int, act: str = "fp16") -> np.ndarray:
    """The FP16 MAC tensor core's output (design `mac-fp16`): fp32 bit patterns, int64 [M, N].

    Inputs: x_bits [M, KT] fp16 activation bit patterns (any of the 65536, subnormals, infinities and NaNs
    included); codes q [N, KT] (B = 1..4 bits) and zeros z [N, NG] as for the integer arrays (docstring 1);
    scale_bits [N, NG] one fp16 scale per column and group (any bit pattern).  KT = NG * group, a multiple
    of K; K (features per beat) a power of two.  Every operation is IEEE 754 with round to nearest, ties
    to even, in this order:

    1. Dequantize (per column and feature; shared by the rows): w[n,k] = fp16((q - z) * s[n,j]).  The
       integer q - z (|q - z| <= 15, sign included) times the fp16 scale is exact in fp32 (at most 15
       significant bits), so this is ONE rounding to fp16: subnormal results are exact (they are integer
       multiples of 2^-24), overflow gives +-inf, 0 * s is a zero with the sign of s (s's sign xor the
       integer's), 0 * inf and anything * NaN give NaN.
    2. Multiply: p[m,n,k] = x[m,k] * w[n,k] in fp32, EXACT: two 11-bit significands make at most 22 bits
       and every product's magnitude is 0 or within [2^-48, 65504^2] (fp32 normal numbers): no rounding, no
       fp32 subnormal, no overflow.  inf * 0 is NaN, inf * finite nonzero is inf with the xor sign.
    3. Per beat (features k0 .. k0+K-1): a pairwise tree in fp32, t = ((p0 + p1) + (p2 + p3)) for K = 4
       (level by level, neighbours first: `fp32_tree`), each addition rounded to fp32.
    4. Accumulate over the job's beats in order: acc = t of the first beat (not 0 + t, so -0 survives),
       then acc = fp32(acc + t) for each later beat.  The job's groups run one after another into the
       same accumulator (the group's scale is already in the weights: no per-group epilogue).
    Y[m,n] = acc, fp32.  Every finite operand of every addition is a multiple of 2^-48 (fp32 rounding keeps that:
    it rounds only at magnitudes of 2^-24 and above, where the ulp is coarser) and below 2^32 KT, so sums
    are never fp32 subnormal and never overflow; +-inf arises only
    from infinite inputs or dequantization overflow.  Zeros: x + (-x) = +0, (-0) + (-0) = -0 (IEEE).
    NaN policy: a NaN input, inf - inf or 0 * inf makes NaN, and every NaN result is the canonical quiet
    NaN 0x7FC00000 (no payloads; `f32_bits`).  The array is exact to this definition, bit for bit.

    act="bf16": x and s are bfloat16 patterns (8 significant bits, exponents 2^-133 (subnormal) .. 2^127),
    the weights are bf16, the sums fp32 as above.  What changes, step by step:
    1. w = bf16((q - z) * s).  The fp32 product is exact whenever it is finite (at most 4 + 8 = 12
       significant bits; a subnormal scale's product is a multiple of 2^-133, on fp32's grid); where the
       exact product reaches 2^128 fp32 gives +-inf, and so would the bf16 rounding, whose overflow
       threshold (2 - 2^-8) 2^127 is lower.  So again ONE rounding, to 8 significant bits (`bf16_bits`):
       subnormal results are exact (only a subnormal s gives one, and then (q - z) f < 2^7), overflow +-inf.
    2. p = fp32(x * w): two 8-bit significands make at most 16 bits, exact while the product is an fp32
       normal number.  bf16's exponent range is fp32's, so a product can now fall below 2^-126 (rounded to
       an fp32 subnormal, or to a zero with the xor sign) or reach 2^128 (rounded to +-inf): in those cases
       it is one IEEE rounding, no longer exact.
    3., 4. unchanged, but the sums can now be fp32 subnormal and can overflow to +-inf from finite inputs
       (IEEE: rounded to nearest even, never flushed).
    """
    x = act_f32(x_bits, act)  # exact widening
    w = act_f32(fp16_dequant(codes, zeros, scale_bits, group, act), act)
    m, kt = x.shape
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        p = x[:, None, :] * w[None, :, :]  # [M, N, KT], exact (fp16)
        t = fp32_tree(p.reshape(m, w.shape[0], kt // K, K))  # [M, N, beats]
        acc = t[..., 0]
        for b in range(1, t.shape[-1]):
            acc = acc + t[..., b]
    return f32_bits(acc)


def fp16_lut_tables(x_bits, K: int, act: str = "fp16") -> np.ndarray:
    """The symmetric tables of lut-tc-fp16, [M, C, 2^(K-1)] (fp16_lut_tile step 1): T8[e] = ((a_0 +- a_1)
    +- a_2) +- ..., the sign of a_t being bit t-1 of e, each addition rounded to the activation format:
    float16 values for fp16, float32 arrays holding bf16 values for bf16 (each fp32 sum rounded by `bf16_bits`)."""
    if check_act(act) == "bf16":
        a = bf16(x_bits)

        def add(u, v):  # fp32 then RNE to bf16: correctly rounded (24 >= 2 * 8 + 2 bits: no double-rounding error)
            return bf16(bf16_bits(u + v))
    else:
        a = f16(x_bits)

        def add(u, v):
            return u + v
    m, kt = a.shape
    ch = a.reshape(m, kt // K, K)
    t = ch[:, :, :1]
    for i in range(1, K):  # entry e's bit i-1 is the newest (highest) index bit: prefix sums shared
        with np.errstate(invalid="ignore", over="ignore"):
            t = np.concatenate([add(t, -ch[:, :, i:i + 1]), add(t, ch[:, :, i:i + 1])], axis=2)
    return t


def fp16_lut_tile(x_bits, codes, zeros, scale_bits, group: int, K: int, bits: int, act: str = "fp16") -> np.ndarray:
    """The LUT tensor core with FP16 activations (design `lut-tc-fp16`): fp32 bit patterns, int64 [M, N].

    Inputs as fp16_mac_tile's, B = `bits`.  With bit-planes q = sum_b 2^b q_b, digits u_b = 2 q_b - 1 and
    c[n,j] = 2^B - 1 - 2 z[n,j] (odd, |c| <= 15):  2 (q - z) = sum_b 2^b u_b + c  (docstring 3).  In order,
    IEEE round to nearest even:
    1. Tables (per row and K-chunk; `fp16_lut_tables`): T8[e] = ((a_0 +- a_1) +- a_2) +- ... +- a_(K-1) in
       fp16, each addition rounded to fp16 (prefix sums shared between entries); a_t's sign is bit t-1 of e.
       RNE is sign-symmetric, so the antisymmetric half is exactly -T8 and a K-bit slice w reads
       T8[w >> 1] (w_0 = 1) or -T8[~w >> 1] (w_0 = 0), exactly sum_t a_t u_t rounded as above.
    2. Plane b of a chunk contributes v = 2^b x the read entry, widened to fp32: exact (an exponent
       increment; the values stay fp32 normal or zero; inf and NaN stay).
    3. Group accumulator, fp32: g = the group's first v, then g = fp32(g + v) chunk by chunk, planes
       b = 0 .. B-1 within a chunk (the bit-serial order).
    4. Row sum, fp32: S = the group's first chunk's all-ones entry T8[2^(K-1) - 1], then S = fp32(S + T8[..])
       chunk by chunk.
    5. Epilogue per output and group: A = fp32(g + fp32(c * S)) (c exact in fp32; the product rounded),
       H = A / 2 (exact: every finite A is 0 or at least 2^-24), P = fp32(H * s) (s widened exactly; one
       rounding; fp32 subnormals are rounded as IEEE, never flushed).
    6. Y = P of the job's first group, then Y = fp32(Y + P) group by group.
    NaN policy as fp16_mac_tile: every NaN result is 0x7FC00000; infinities arise from infinite inputs or
    table overflow (fp16 sums above 65504).

    act="bf16" (x and s bfloat16; fp16_mac_tile's bf16 note):
    1. The table entries are bf16: each addition rounded to bf16 (the fp32 sum of two bf16 values rounded
       again to bf16 is the correctly rounded bf16 sum: 24 >= 2 * 8 + 2 bits), overflow above (2 - 2^-8)
       2^127 to +-inf; still sign-symmetric.
    2. v = 2^b x entry in fp32: exact, except that an entry of 2^127 or more times 2^b (b >= 1) overflows
       to +-inf; bf16 subnormal entries widen to fp32 subnormals, and doubling those is exact.
    5. H = fp32(A / 2): exact unless |A| < 2^-125, where A / 2 is an fp32 subnormal and its lost bit
       rounds to nearest even (A can be that small now).  c * S, H * s and every sum can be fp32 subnormal
       or overflow; all are the IEEE roundings.
    """
    tab = fp16_lut_tables(x_bits, K, act)  # [M, C, E]
    m, C, E = tab.shape
    q = as_int64(codes)
    n, kt = q.shape
    cpg = group // K
    f32 = np.float32
    sc = act_f32(scale_bits, act)  # [N, NG]
    c = ((1 << bits) - 1 - 2 * as_int64(zeros)).astype(f32)
    y = None
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        for j in range(kt // group):
            g = S = None
            for ci in range(j * cpg, (j + 1) * cpg):
                top = tab[:, ci, E - 1].astype(f32)[:, None]  # [M, 1]
                S = top if S is None else S + top
                for b in range(bits):
                    w = (q[:, ci * K:(ci + 1) * K] >> b) & 1  # [N, K]
                    idx = (w[:, 1:] << np.arange(K - 1)).sum(axis=1) if K > 1 else np.zeros(n, np.int64)
                    pos = w[:, 0] == 1
                    eff = np.where(pos, idx, (~idx) & (E - 1))
                    val = tab[:, ci, :][:, eff].astype(f32)  # [M, N]
                    val = np.where(pos[None, :], val, -val) * f32(1 << b)
                    g = val if g is None else g + val
            A = g + c[None, :, j] * S
            P = (A * f32(0.5)) * sc[None, :, j]
            y = P if y is None else y + P
    return f32_bits(y)


def fp16_mixpe_tile(x_bits, codes, zeros, scale_bits, group: int, K: int, act: str = "fp16") -> np.ndarray:
    """MixPE's fp16 mode (design `mixpe-fp16`): fp32 bit patterns, int64 [M, N].

    Inputs as fp16_mac_tile's.  The integer weight w' = q - z (B+1 bits two's complement) is never made a
    float: each PE shifts the activation's 11-bit significand by the set bits of |w'| and adds the copies
    (shift-and-add), keeping the activation's exponent.  In order, IEEE round to nearest even:
    1. p[m,n,k] = x[m,k] * w'[n,k] in fp32, EXACT (11 + 4 significant bits); NaN for a NaN x or inf * 0, a
       zero with the xor sign (w' = 0 counts as +0), inf * nonzero = +-inf.
    2. Per beat the pairwise fp32 tree of fp16_mac_tile (step 3).
    3. Group accumulator: g = the group's first beat's t, then g = fp32(g + t) beat by beat.
    4. Per output and group: P = fp32(g * s) (s widened exactly; one rounding).
    5. Y = P of the job's first group, then Y = fp32(Y + P) group by group.
    NaN policy as fp16_mac_tile (0x7FC00000).  Against mac-fp16 the weights skip the fp16 rounding of
    (q - z) s, and the scale is applied once per group sum instead.

    act="bf16" (x and s bfloat16; nothing is rounded to bf16 inside the array):
    1. p = x * w' in fp32: 8 + 4 significant bits, exact whenever finite (a bf16 subnormal x times w' is a
       multiple of 2^-133, on fp32's grid, subnormal or not); where |x w'| reaches 2^128 it is +-inf, the
       only rounding of this step.
    2.-5. unchanged; the sums and g * s can now be fp32 subnormal or overflow (IEEE roundings).
    """
    x = act_f32(x_bits, act)
    wp = int_weights(codes, zeros, group).astype(np.float32)
    m, kt = x.shape
    n = wp.shape[0]
    sc = act_f32(scale_bits, act)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        t = fp32_tree((x[:, None, :] * wp[None, :, :]).reshape(m, n, kt // K, K))  # [M, N, beats]
        cpg = group // K
        y = None
        for j in range(kt // group):
            g = t[..., j * cpg]
            for b in range(j * cpg + 1, (j + 1) * cpg):
                g = g + t[..., b]
            P = g * sc[None, :, j]
            y = P if y is None else y + P
    return f32_bits(y)
