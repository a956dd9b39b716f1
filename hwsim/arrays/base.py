"""What every array shares: the job timing derived from the RTL and the exact Y of a whole layer. The
design record (hwsim.designs) says which timing rules apply (`bit_serial`) and supplies the event counts.

Timing of the RTL (rtl/gen/common.py and the design generators), input always valid and out_ready
always high. Cycle c0 = the cycle (rising edge) the job's first input beat is accepted. Names:
CPG = cfg.chunks_per_group input beats per group, cpb = cfg.cycles_per_beat (bit-serial: B planes, else 1),
NB = cfg.M * cfg.N / cfg.lanes epilogue drain cycles per group.

- Snapshot: a group's M*N sums move to the epilogue's shadow bank at a snapshot edge S_g.
  one beat per cycle (mixpe, mac): in the cycle its last beat is accepted (the sum is formed combinationally on that beat),
    so S_0 = c0 + CPG - 1.
  bit-serial (lut-tc): a beat is registered (tables, plane-major weights) on its accepting edge and its B planes run
    in the next B cycles; the snapshot is on the last plane of the group's last beat, and the next beat is
    accepted on that same edge (in_ready = fin), so S_0 = c0 + CPG * B (one more pipeline stage).
- Drain: the epilogue steps in cycles S_g + 1 .. S_g + NB; a new snapshot is allowed in the drain's last
  step (snap_ok = ~sh_full | (e_step & eb_end)), so S_{g+1} = S_g + max(CPG * cpb, NB) = S_g + P.
  Job boundaries do not matter: the next job's first group computes while the last group drains as the
  output stream.
- Output: the job's last group drains as out_valid beats in cycles S_last + 1 .. S_last + NB.
So a stream of T groups (any split into jobs) takes, from c0 to the last output beat inclusive,
    first + (T - 1) * P + NB + 1  cycles, first = S_0 - c0.
tests/hwsim/test_rtl_agreement.py checks every input and output beat's cycle against the cocotb run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwsim import golden as gm
from hwsim.config import ArrayConfig


@dataclass(frozen=True)
class Timing:
    first: int  # S_0 - c0: cycles from the first accepted beat to the first snapshot edge
    period: int  # P: cycles between snapshots in a steady stream
    drain: int  # NB: epilogue cycles per group (= output beats per job)
    beat_interval: int  # cycles between accepted input beats within a group


def timing(cfg: ArrayConfig) -> Timing:
    cpg, cpb, nb = cfg.chunks_per_group, cfg.cycles_per_beat, cfg.drain_cycles
    first = cpg * cpb if cfg.design_record.bit_serial else cpg - 1
    return Timing(first=first, period=max(cpg * cpb, nb), drain=nb, beat_interval=cpb)


def stream_cycles(cfg: ArrayConfig, n_groups: int, jobs: int = 1) -> int:
    """Cycles of `jobs` back-to-back jobs of `n_groups` groups each, no stalls: from the first accepted
    input beat to the last output beat, inclusive."""
    if n_groups < 1 or jobs < 1:
        raise ValueError("need at least one group and one job")
    t = timing(cfg)
    return t.first + (jobs * n_groups - 1) * t.period + t.drain + 1


def tile_cycles(cfg: ArrayConfig, n_groups: int) -> int:
    """One job alone on the RTL with no stalls (first input beat to last output beat, inclusive)."""
    return stream_cycles(cfg, n_groups, 1)


def beat_schedule(
    cfg: ArrayConfig,
    groups_per_job: list[int],
    present: list[int] | None = None,
    out_ready: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The RTL's exact handshake schedule: the cycle (relative to c0 = the first beat's acceptance) at
    which every input beat is accepted and every output beat leaves, for a stream of jobs.

    present[i]: the earliest cycle the driver offers beat i (it also never offers a beat before the
    previous one was taken; default: always offered, i.e. no input stalls); out_ready[c]: out_ready in
    cycle c (default high; cycles past the list are high). Used by the RTL agreement tests (an input
    gap is what a DRAM stall looks like to the array); simulate_linear uses the closed form.

    Rules (rtl/gen): one-beat-per-cycle designs accept a beat per cycle; a group's last beat needs snap_ok,
    i.e. the previous group's drain in its last step or done, and snapshots on its own edge. A bit-serial
    design accepts a
    beat once the previous beat's B planes ran (in_ready = ~busy | fin) and snapshots on the last plane
    of the group's last beat, waiting there for snap_ok. A drain steps every cycle, except a job's last
    group whose steps are the output beats and need out_ready."""
    cpg, B, nb = cfg.chunks_per_group, cfg.cycles_per_beat, cfg.drain_cycles
    serial = cfg.design_record.bit_serial
    nbeats = sum(groups_per_job) * cpg
    if present is None:
        present = [0] * nbeats

    def ready(c: int) -> bool:
        return out_ready is None or c >= len(out_ready) or bool(out_ready[c])

    ins: list[int] = []
    outs: list[int] = []
    prev, free, drained = -1, 0, None  # last acceptance, core free from, previous drain's last step
    i = 0
    for ng in groups_per_job:
        for g in range(ng):
            snap = 0
            for c in range(cpg):
                last = c == cpg - 1
                a = max(present[i], prev + 1, free)
                if serial:
                    if last:
                        snap = a + B if drained is None else max(a + B, drained)
                        free = snap
                    else:
                        free = a + B
                else:
                    if last and drained is not None:
                        a = max(a, drained)
                    free = a + 1
                    snap = a
                ins.append(a)
                prev = a
                i += 1
            if g < ng - 1:
                drained = snap + nb
            else:
                steps: list[int] = []
                c = snap + 1
                while len(steps) < nb:
                    if ready(c):
                        steps.append(c)
                    c += 1
                outs.extend(steps)
                drained = steps[-1]
    return np.asarray(ins, dtype=np.int64), np.asarray(outs, dtype=np.int64)


# ----------------------------------------------------------------------------------------------------
# Values


def _exact_dtype(cfg: ArrayConfig):
    """float32 when every group sum and partial sum is an integer below 2^24 (exact in any order), else
    float64 (exact below 2^53: every supported width is far below)."""
    return np.float32 if cfg.acc_bound < (1 << 24) else np.float64


def layer_y(cfg: ArrayConfig, t: gm.TileInputs) -> np.ndarray:
    """Y [M, N] of a whole layer with full-K jobs: golden.tile_y of every (row block, column block) tile
    (the value of an output does not depend on the tiling), computed group by group in floating point on
    integer operands, exactly:

    - acc_j = a_j @ w'_j^T (q_j - z_j, or the E2M1 decoding): every partial sum is an integer bounded by cfg.acc_bound (golden.py's
      ACCW bound), represented exactly by the chosen float type in any summation order;
    - v = rshift_round(acc * mant, sh) = floor(acc * (mant * 2^-sh) + 1/2) in float64: mant * 2^-sh is
      exact, acc * mant < 2^53 is exact and the power-of-two scale keeps it so; the + 1/2 is exact
      whenever the result can differ from 0 (sh <= PW < 53), and |x| < 1/2 floors to 0 either way;
    - Y = sum_j v (exact below 2^53), wrapped to cfg.y_bits as the RTL's register does.
    - with minimums (golden.py docstring 4b) each group adds vm = floor(S * (mm * 2^-(dm + da)) + 1/2) with
      S the exact row group sum (|S * mm| < 2^PW < 2^53: exact likewise).
    tests/hwsim check this against golden.tile_y on every design and number format."""
    a, codes = np.asarray(t.a), np.asarray(t.codes)
    m, kt = a.shape
    n = codes.shape[0]
    g = cfg.group
    ng = kt // g
    dt = _exact_dtype(cfg)
    zeros = np.asarray(t.zeros, dtype=np.int64)
    mant = np.asarray(t.mant, dtype=np.float64)
    d = np.asarray(t.d, dtype=np.int64)
    da = np.asarray(t.da, dtype=np.int64)
    af = a.astype(dt)
    y = np.zeros((m, n), dtype=np.float64)
    a8 = not np.any(da)
    if t.mm is not None:
        S = gm.group_act_sums(a, g).astype(np.float64)
        mm = np.asarray(t.mm, dtype=np.float64)
        dm = np.asarray(t.dm, dtype=np.int64)
    for j in range(ng):
        sl = slice(j * g, (j + 1) * g)
        if cfg.e2m1:
            wp = gm.e2m1_weights(codes[:, sl]).astype(dt)
        else:
            wp = (codes[:, sl].astype(np.int16) - zeros[:, j : j + 1].astype(np.int16)).astype(dt)
        acc = (af[:, sl] @ wp.T).astype(np.float64)  # [M, N], exact integers
        if a8:
            sc = np.ldexp(mant[:, j], -d[:, j])[None, :]
        else:
            sc = np.ldexp(mant[None, :, j], -(d[None, :, j] + da[:, j : j + 1]))
        acc *= sc
        acc += 0.5
        np.floor(acc, out=acc)
        y += acc
        if t.mm is not None:
            if a8:
                vm = S[:, j : j + 1] * np.ldexp(mm[:, j], -dm[:, j])[None, :]
            else:
                vm = S[:, j : j + 1] * np.ldexp(mm[None, :, j], -(dm[None, :, j] + da[:, j : j + 1]))
            y += np.floor(vm + 0.5)
    return gm.wrap_signed(y.astype(np.int64), cfg.y_bits)
