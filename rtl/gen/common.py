"""Shared pieces of the array generators: ports, input slicing, job control, and the dyadic epilogue.
`generate(cfg)` runs the generator module named by the configuration's design record (hwsim.designs).

Every generated array is one flat Verilog-2005 module (no SystemVerilog, no generate blocks: the
generators unroll the datapath, so the text is what synthesis sees) with this interface:

    clk, rst_n (synchronous, active low)
    in_valid / in_ready            one input beat = one K-chunk of the job (all rows and columns):
      in_act   [M*K*AW]            a[m, k0+t] at bits (m*K + t)*AW, two's complement
                                   (lut-tc table "stream": in_tbl [M*E*TW], table entry T[m, e] at
                                   bits (m*E + e)*TW, instead)
      in_w     [N*K*B]             code q[n, k0+t] at bits (n*K + t)*B, unsigned (E2M1: the 4-bit pattern)
      in_zero  [N*B]               z[n, j]   } read on the first beat of each group (no in_zero for E2M1)
      in_mant  [N*MW]              mant[n, j]} (dyadic scale mantissa, unsigned)
      in_shift [N*SW]              d[n, j]   } (dyadic scale right shift)
      in_ashift[M*SW]              da[m, j]  } (A16 BFP exponent offset; 0 for A8)
      in_last                      the job's final beat (it must end a group)
    out_valid / out_ready          one output beat = `lanes` values of Y, slots row-major (m*N + n)
      out_data [lanes*YW]          lane l at bits l*YW, two's complement
      out_last                     the job's final output beat
      in_minm  [N*(MW+1)]          mm[n, j]  } arrays with the minimum term only (MinsConfig):
      in_mins  [N*SW]              dm[n, j]  } signed minimum mantissa and its shift
The ports are records in rtl/gen/ports.py (`stream_ports`), which the header below and the testbenches
read (the widths, signs and packing above).

Handshakes are AXI-stream style: a beat moves on a rising edge where valid and ready are both high;
valid never waits for ready; the payload holds while valid is high and ready low. in_ready may depend
combinationally on out_ready (the epilogue's drain); nothing depends combinationally on in_valid.

Core -> epilogue: when a core finishes a weight group it snapshots its M*N group accumulators (and the
group's fields) into a shadow bank in the same cycle (`snap_fire`), if the bank is free or being freed
that cycle (`snap_ok`); otherwise the core stalls (in_ready low). The epilogue drains the shadow bank
`lanes` slots per cycle (M*N/lanes cycles per group) through `lanes` dequantization units:
P = acc * mant, v = rshift_round(P, d + da), Y = (first group ? 0 : Y) + v; an array with the minimum
term (scale-and-minimum groups, hwsim/golden.py 4b) also snapshots the row sums S and the group's mm, dm
and adds vm = rshift_round(S * mm, dm + da) in the same lane and cycle. Y lives in a circular
shift register of M*N/lanes entries (no read muxes). On the job's last group the drain is the output
stream itself (stalls on out_ready), so the next job's first group computes while the outputs drain.
Numbers and their widths: hwsim/golden.py's docstring.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from hwsim.config import ArrayConfig
from rtl.gen.ports import stream_ports


@dataclass(frozen=True)
class MinsConfig(ArrayConfig):
    """An array with the minimum term of scale-and-minimum groups (hwsim/golden.py docstring 4b): the same
    datapath plus per-row group sums S, the minimum fields mm, dm and the epilogue's second rounding term.
    Its module name ends in `_min`; timing and every width of ArrayConfig are unchanged (Y is exact for
    2^(guard_bits-1) groups)."""

    mins: bool = True

    @property
    def name(self) -> str:
        return f"{ArrayConfig.name.fget(self)}_min"


def has_mins(cfg: ArrayConfig) -> bool:
    return bool(getattr(cfg, "mins", False))


def with_mins(cfg: ArrayConfig, mins: bool = True) -> ArrayConfig:
    """`cfg` with (or without) the minimum term."""
    d = {k: v for k, v in cfg.to_dict().items() if k != "mins"}
    return MinsConfig(**d) if mins else ArrayConfig(**d)


def config_from_dict(d: dict) -> ArrayConfig:
    """ArrayConfig.from_dict that also reads a MinsConfig's dict (its `mins` key)."""
    d = dict(d)
    return with_mins(ArrayConfig(**{k: v for k, v in d.items() if k != "mins"}), bool(d.get("mins")))


def min_widths(cfg: ArrayConfig) -> tuple[int, int]:
    """(SUMW, QW): the row sum's width and the product S * mm's (SUMW + MW + 1 bits, signed)."""
    return cfg.sum_bits, cfg.sum_bits + cfg.mant_bits + 1


class V:
    """Tiny line writer for generated Verilog."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, s: str = ""):
        self.lines.append(s)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def sext(name: str, frm: int, to: int) -> str:
    """Sign-extend identifier/bit-select `name` of width frm to width to (a sized, unsigned concat)."""
    if to == frm:
        return name
    if to < frm:
        raise ValueError(f"cannot sign-extend {name} from {frm} to {to}")
    return f"{{{{{to - frm}{{{name}[{frm - 1}]}}}}, {name}}}"


def zext(name: str, frm: int, to: int) -> str:
    if to == frm:
        return name
    return f"{{{to - frm}'d0, {name}}}"


def clog2(x: int) -> int:
    return max(1, (x - 1).bit_length())


def module_name(cfg: ArrayConfig) -> str:
    return cfg.name


def header(cfg: ArrayConfig, v: V, what: str):
    c = cfg
    AW, B, MW, SW, YW, EL = c.act_bits, c.bits, c.mant_bits, c.shift_bits, c.y_bits, c.lanes
    v(f"// {module_name(cfg)}: {what}")
    v("// Generated by lowbit rtl/gen (do not edit). Formats: hwsim/golden.py; interface: rtl/gen/common.py.")
    v(f"// design={c.design} M={c.M} N={c.N} K={c.K} B={B} ternary={int(c.ternary)} weights={c.weight_format} act={c.act} AW={AW} G={c.group}")
    v(f"// MW={MW} SW={SW} ACCW={c.acc_bits} PW={c.prod_bits} YW={YW} lanes={EL}")
    v("`timescale 1ns/1ps")
    v(f"module {module_name(cfg)} #(")
    params = [
        ("M", c.M), ("N", c.N), ("K", c.K), ("B", B), ("AW", AW), ("G", c.group), ("MW", MW), ("SW", SW),
        ("ACCW", c.acc_bits), ("PW", c.prod_bits), ("YW", YW), ("LANES", EL),
        ("TERNARY", int(c.ternary)), ("A16", int(c.act == "a16")), ("MINS", int(has_mins(c))), ("E2M1", int(c.e2m1)),
    ]
    v("    // informational (read by testbenches and tools): the datapath below is unrolled for exactly")
    v("    // these values, so overriding them does not change the hardware")
    v("    /* verilator lint_off UNUSEDPARAM */")
    for i, (k, val) in enumerate(params):
        v(f"    parameter {k} = {val}{',' if i < len(params) - 1 else ''}")
    v("    /* verilator lint_on UNUSEDPARAM */")
    v(") (")
    ports = [p.declaration() for p in stream_ports(cfg)]
    for i, p in enumerate(ports):
        v(f"    {p}{',' if i < len(ports) - 1 else ''}")
    v(");")
    v()


def input_fields(cfg: ArrayConfig, v: V):
    """Named slices of the input buses."""
    c = cfg
    AW, B, MW, SW = c.act_bits, c.bits, c.mant_bits, c.shift_bits
    v("// ---- input fields")
    for m in range(c.M if not c.streams_tables else 0):  # streamed tables: the core reads in_tbl itself
        for t in range(c.K):
            lo = (m * c.K + t) * AW
            v(f"wire signed [{AW - 1}:0] a_{m}_{t} = in_act[{lo + AW - 1}:{lo}];")
    for n in range(c.N):
        for t in range(c.K):
            lo = (n * c.K + t) * B
            v(f"wire [{B - 1}:0] q_{n}_{t} = in_w[{lo + B - 1}:{lo}];")
    for n in range(c.N):
        if not c.e2m1:
            v(f"wire [{B - 1}:0] iz_{n} = in_zero[{n * B + B - 1}:{n * B}];")
        v(f"wire [{MW - 1}:0] im_{n} = in_mant[{n * MW + MW - 1}:{n * MW}];")
        v(f"wire [{SW - 1}:0] id_{n} = in_shift[{n * SW + SW - 1}:{n * SW}];")
    for m in range(c.M):
        v(f"wire [{SW - 1}:0] ida_{m} = in_ashift[{m * SW + SW - 1}:{m * SW}];")
    if has_mins(c):
        for n in range(c.N):
            v(f"wire signed [{MW}:0] imm_{n} = in_minm[{n * (MW + 1) + MW}:{n * (MW + 1)}];")
            v(f"wire [{SW - 1}:0] idm_{n} = in_mins[{n * SW + SW - 1}:{n * SW}];")
    v()


def group_params(cfg: ArrayConfig, v: V, latch: str):
    """Group-field registers gp_* loaded on the first beat of a group (when `latch` is true), and eff_*
    = the current group's fields (the input itself on the first beat, the registers after)."""
    c = cfg
    B, MW, SW = c.bits, c.mant_bits, c.shift_bits
    v("// ---- group fields (read on the first beat of each group)")
    for n in range(c.N):
        v(("" if c.e2m1 else f"reg [{B - 1}:0] gz_{n}; ") + f"reg [{MW - 1}:0] gm_{n}; reg [{SW - 1}:0] gd_{n};")
    for m in range(c.M):
        v(f"reg [{SW - 1}:0] gda_{m};")
    if has_mins(c):
        for n in range(c.N):
            v(f"reg signed [{MW}:0] gmm_{n}; reg [{SW - 1}:0] gdm_{n};")
    v("always @(posedge clk) begin")
    v(f"    if ({latch}) begin")
    for n in range(c.N):
        v(("        " if c.e2m1 else f"        gz_{n} <= iz_{n}; ") + f"gm_{n} <= im_{n}; gd_{n} <= id_{n};")
        if has_mins(c):
            v(f"        gmm_{n} <= imm_{n}; gdm_{n} <= idm_{n};")
    for m in range(c.M):
        v(f"        gda_{m} <= ida_{m};")
    v("    end")
    v("end")
    v()


def eff_group_params(cfg: ArrayConfig, v: V, first: str):
    c = cfg
    B, MW, SW = c.bits, c.mant_bits, c.shift_bits
    for n in range(c.N):
        if not c.e2m1:
            v(f"wire [{B - 1}:0] ez_{n} = {first} ? iz_{n} : gz_{n};")
        v(f"wire [{MW - 1}:0] em_{n} = {first} ? im_{n} : gm_{n};")
        v(f"wire [{SW - 1}:0] ed_{n} = {first} ? id_{n} : gd_{n};")
    for m in range(c.M):
        v(f"wire [{SW - 1}:0] eda_{m} = {first} ? ida_{m} : gda_{m};")
    if has_mins(c):
        for n in range(c.N):
            v(f"wire signed [{MW}:0] emm_{n} = {first} ? imm_{n} : gmm_{n};")
            v(f"wire [{SW - 1}:0] edm_{n} = {first} ? idm_{n} : gdm_{n};")
    v()


def row_sums(cfg: ArrayConfig, v: V, first: str, fire: str):
    """Per-row group activation sums of a one-beat-per-cycle core (arrays with the minimum term):
    S_nx_m = (first chunk ? 0 : S_m) + the beat's K activations, registered when the beat is taken; the
    snapshot reads S_nx_m on the group's last beat."""
    SUMW, _ = min_widths(cfg)
    v("// ---- row sums S over the group (the minimum term)")
    for m in range(cfg.M):
        terms = " + ".join(sext(f"a_{m}_{t}", cfg.act_bits, SUMW) for t in range(cfg.K))
        v(f"reg signed [{SUMW - 1}:0] S_{m};")
        v(f"wire signed [{SUMW - 1}:0] S_nx_{m} = ({first} ? {SUMW}'d0 : S_{m}) + {terms};")
    v("always @(posedge clk) begin")
    v(f"    if ({fire}) begin")
    for m in range(cfg.M):
        v(f"        S_{m} <= S_nx_{m};")
    v("    end")
    v("end")
    v()


def epilogue(cfg: ArrayConfig, v: V, mode: str, src: dict):
    """Shadow bank + dequantization lanes + Y register + output stream.

    mode: 'int' (snapshot holds acc, ACCW bits), 'lut' (snapshot holds acc2, ACCW bits, plus row sums S
    and per-column zeros for the correction), 'prod' (snapshot holds P = acc*mant, PW bits:
    a core that multiplies by the mantissa itself).
    The shadow bank itself (sh_0 .. sh_{M*N-1}, declared by `shadow_decls`) is loaded and shifted by the
    core's clocked block through `shadow_update` (so the core's sums stay procedural temporaries, which
    Icarus evaluates once per clock instead of once per input event).
    src names the core's snapshot signals: mant(n), d(n), da(m), z(n) ('lut'), S(m) ('lut', and every
    array with the minimum term), mm(n), dm(n) (the minimum term), first, last (is this the job's first /
    last group).
    The core declares wires snap_req (a group ends this cycle if allowed), snap_ok, snap_fire, and drives snap_req.
    """
    c = cfg
    M, N, EL = c.M, c.N, c.lanes
    B, MW, SW, YW, PW, ACCW = c.planes, c.mant_bits, c.shift_bits, c.y_bits, c.prod_bits, c.acc_bits
    SUMW = c.sum_bits
    A2W = c.acc2_bits  # 'lut': the plane sum acc2 (ACCW but for E2M1's five planes)
    CONST_C = mode == "lut" and c.e2m1  # E2M1's correction is c = -1 for every column: t = acc2 - S
    MN = M * N
    NB = MN // EL  # beats per drain
    NCB = N // EL  # column blocks per row
    SHW = SW + 1
    BW = clog2(NB + 1)
    CBW = clog2(NCB + 1)
    MINS = has_mins(c)
    QW = min_widths(c)[1]
    keepS = mode == "lut" or MINS
    v("// ---- epilogue: dequantization lanes, Y, output stream")
    for n in range(N):
        v(f"reg [{MW - 1}:0] em_r_{n}; reg [{SW - 1}:0] ed_r_{n};" if mode != "prod" else f"reg [{SW - 1}:0] ed_r_{n};")
        if mode == "lut" and not CONST_C:
            v(f"reg signed [{B + 1}:0] ec_r_{n};")
        if MINS:
            v(f"reg signed [{MW}:0] emm_r_{n}; reg [{SW - 1}:0] edm_r_{n};")
    for m in range(M):
        v(f"reg [{SW - 1}:0] eda_r_{m};")
        if keepS:
            v(f"reg signed [{SUMW - 1}:0] eS_r_{m};")
    for i in range(MN):
        v(f"reg signed [{YW - 1}:0] y_{i};")
    v(f"assign eb_end = (eb == {BW}'d{NB - 1});")
    v("assign e_step = sh_full & (~sh_last | out_ready);")
    v("assign snap_ok = ~sh_full | (e_step & eb_end);")
    v("assign snap_fire = snap_req & snap_ok;")
    v()
    # lanes
    for l in range(EL):
        if mode == "lut":
            # t = acc2 + c*S; acc = t >>> 1 (|acc| <= acc_bound fits ACCW bits; t's top bits beyond are its sign)
            v("/* verilator lint_off UNUSEDSIGNAL */  // t[0] is always 0 (acc2 + c*S is even): dropped by the >>> 1")
            if CONST_C:
                v(f"wire signed [{A2W}:0] t_{l} = {sext(f'sh_{l}', A2W, A2W + 1)} - {sext('eS_r_0', SUMW, A2W + 1)};")
            else:
                v(f"wire signed [{A2W}:0] cs_{l} = ec_r_{l} * eS_r_0;")
                v(f"wire signed [{A2W}:0] t_{l} = {sext(f'sh_{l}', A2W, A2W + 1)} + cs_{l};")
            v("/* verilator lint_on UNUSEDSIGNAL */")
            v(f"wire signed [{ACCW - 1}:0] acc_{l} = t_{l}[{ACCW}:1];")
        elif mode == "int":
            v(f"wire signed [{ACCW - 1}:0] acc_{l} = sh_{l};")
        if mode == "prod":
            v(f"wire signed [{PW - 1}:0] p_{l} = sh_{l};")
        else:
            v(f"wire signed [{MW}:0] ms_{l} = {{1'b0, em_r_{l}}};")
            v(f"wire signed [{PW - 1}:0] p_{l} = acc_{l} * ms_{l};")
        v(f"wire [{SHW - 1}:0] s_{l} = {zext(f'ed_r_{l}', SW, SHW)} + {zext('eda_r_0', SW, SHW)};")
        shmax = min(PW, (1 << SHW) - 1)
        v(f"wire [{SHW - 1}:0] sc_{l} = (s_{l} > {SHW}'d{shmax}) ? {SHW}'d{shmax} : s_{l};")
        v(f"wire [{PW}:0] half_{l} = (sc_{l} == {SHW}'d0) ? {PW + 1}'d0 : ({{{{{PW}{{1'b0}}}}, 1'b1}} << (sc_{l} - {SHW}'d1));")
        v(f"wire signed [{PW}:0] pr_{l} = {sext(f'p_{l}', PW, PW + 1)} + half_{l};")
        v(f"wire signed [{PW}:0] v_{l} = pr_{l} >>> sc_{l};")
        if MINS:  # the minimum term: vm = rshift_round(S * mm, dm + da), the same rounding shift
            v(f"wire signed [{QW - 1}:0] pm_{l} = eS_r_0 * emm_r_{l};")
            v(f"wire [{SHW - 1}:0] sm_{l} = {zext(f'edm_r_{l}', SW, SHW)} + {zext('eda_r_0', SW, SHW)};")
            qmax = min(QW, (1 << SHW) - 1)
            v(f"wire [{SHW - 1}:0] scm_{l} = (sm_{l} > {SHW}'d{qmax}) ? {SHW}'d{qmax} : sm_{l};")
            v(f"wire [{QW}:0] hm_{l} = (scm_{l} == {SHW}'d0) ? {QW + 1}'d0 : ({{{{{QW}{{1'b0}}}}, 1'b1}} << (scm_{l} - {SHW}'d1));")
            v(f"wire signed [{QW}:0] pmr_{l} = {sext(f'pm_{l}', QW, QW + 1)} + hm_{l};")
            v(f"wire signed [{QW}:0] vm_{l} = pmr_{l} >>> scm_{l};")
            v(f"wire signed [{YW - 1}:0] yn_{l} = (sh_first ? {YW}'d0 : y_{l}) + {sext(f'v_{l}', PW + 1, YW)} + {sext(f'vm_{l}', QW + 1, YW)};")
        else:
            v(f"wire signed [{YW - 1}:0] yn_{l} = (sh_first ? {YW}'d0 : y_{l}) + {sext(f'v_{l}', PW + 1, YW)};")
    v("assign out_valid = sh_full & sh_last;")
    v("assign out_last = eb_end;")
    v("assign out_data = {" + ", ".join(f"yn_{l}" for l in reversed(range(EL))) + "};")
    v()
    v("always @(posedge clk) begin")
    v("    if (!rst_n) begin")
    v(f"        sh_full <= 1'b0; eb <= {BW}'d0; ecb <= {CBW}'d0;")
    v("    end else begin")
    v("        if (e_step) begin")
    v(f"            eb <= eb_end ? {BW}'d0 : eb + {BW}'d1;")
    v(f"            ecb <= (ecb == {CBW}'d{NCB - 1}) ? {CBW}'d0 : ecb + {CBW}'d1;")
    v("            if (eb_end) sh_full <= 1'b0;")
    v("        end")
    v("        if (snap_fire) begin")
    v(f"            sh_full <= 1'b1; eb <= {BW}'d0; ecb <= {CBW}'d0;")
    v("        end")
    v("    end")
    v("end")
    v()
    v("always @(posedge clk) begin")
    v("    if (snap_fire) begin")
    v(f"        sh_first <= {src['first']}; sh_last <= {src['last']};")
    for n in range(N):
        if mode != "prod":
            v(f"        em_r_{n} <= {src['mant'](n)};")
        v(f"        ed_r_{n} <= {src['d'](n)};")
        if mode == "lut" and not CONST_C:
            z = src["z"](n)
            v(f"        ec_r_{n} <= $signed({{2'b00, ~{z}}}) - $signed({{2'b00, {z}}});")
        if MINS:
            v(f"        emm_r_{n} <= {src['mm'](n)}; edm_r_{n} <= {src['dm'](n)};")
    for m in range(M):
        v(f"        eda_r_{m} <= {src['da'](m)};")
        if keepS:
            v(f"        eS_r_{m} <= {src['S'](m)};")
    v("    end else if (e_step) begin")
    for n in range(N):
        j = (n + EL) % N
        if mode != "prod":
            v(f"        em_r_{n} <= em_r_{j};")
        v(f"        ed_r_{n} <= ed_r_{j};")
        if mode == "lut" and not CONST_C:
            v(f"        ec_r_{n} <= ec_r_{j};")
        if MINS:
            v(f"        emm_r_{n} <= emm_r_{j}; edm_r_{n} <= edm_r_{j};")
    v(f"        if (ecb == {CBW}'d{NCB - 1}) begin")
    for m in range(M):
        j = (m + 1) % M
        v(f"            eda_r_{m} <= eda_r_{j};")
        if keepS:
            v(f"            eS_r_{m} <= eS_r_{j};")
    v("        end")
    v("    end")
    v("end")
    v()
    v("always @(posedge clk) begin")
    v("    if (e_step) begin")
    for i in range(MN - EL):
        v(f"        y_{i} <= y_{i + EL};")
    for l in range(EL):
        v(f"        y_{MN - EL + l} <= yn_{l};")
    v("    end")
    v("end")
    v()


def shadow_width(cfg: ArrayConfig, mode: str) -> int:
    return cfg.prod_bits if mode == "prod" else cfg.acc2_bits if mode == "lut" else cfg.acc_bits


def shadow_decls(cfg: ArrayConfig, v: V, mode: str):
    """Handshake wires between core and epilogue, and the shadow bank registers (declared first)."""
    MN, EL = cfg.M * cfg.N, cfg.lanes
    NB, NCB = MN // EL, cfg.N // EL
    v("// ---- core <-> epilogue handshake and the shadow bank")
    v("wire snap_ok, snap_req, snap_fire, e_step, eb_end;")
    v("reg sh_full, sh_first, sh_last;")
    v(f"reg [{clog2(NB + 1) - 1}:0] eb;  // drain beat")
    v(f"reg [{clog2(NCB + 1) - 1}:0] ecb; // column block of the current beat")
    for i in range(MN):
        v(f"reg signed [{shadow_width(cfg, mode) - 1}:0] sh_{i};")
    v()


def shadow_update(cfg: ArrayConfig, m: int, n: int, expr: str) -> str:
    """Statement for the core's clocked block: load slot (m, n) with `expr` on a snapshot, else shift."""
    i = m * cfg.N + n
    if i + cfg.lanes < cfg.M * cfg.N:
        return f"if (snap_fire) sh_{i} <= {expr}; else if (e_step) sh_{i} <= sh_{i + cfg.lanes};"
    return f"if (snap_fire) sh_{i} <= {expr};"


def generate(cfg: ArrayConfig) -> str:
    """Verilog text of the array `cfg` describes (its design record names the generator module)."""
    return importlib.import_module(cfg.design_record.generator).generate(cfg)


def bit_parallel_control(c: ArrayConfig, v: V):
    """Chunk counter, snapshot request and job-first flag shared by the one-beat-per-cycle arrays."""
    CPG, CW = c.chunks_per_group, clog2(c.chunks_per_group + 1)
    v(f"reg [{CW - 1}:0] ci;  // chunk index within the group")
    v(f"wire c_first = (ci == {CW}'d0);")
    v(f"wire c_last = (ci == {CW}'d{CPG - 1});")
    v("assign in_ready = ~c_last | snap_ok;")
    v("wire in_fire = in_valid & in_ready;")
    v("assign snap_req = in_valid & c_last;")
    v("reg jfirst;  // the next group to finish is the first of its job")
    v("always @(posedge clk) begin")
    v("    if (!rst_n) begin")
    v(f"        ci <= {CW}'d0; jfirst <= 1'b1;")
    v("    end else if (in_fire) begin")
    v(f"        ci <= c_last ? {CW}'d0 : ci + {CW}'d1;")
    v("        if (c_last) jfirst <= in_last;")
    v("    end")
    v("end")
    group_params(c, v, "in_fire & c_first")
    eff_group_params(c, v, "c_first")
    if has_mins(c):
        row_sums(c, v, "c_first", "in_fire")


def e2m1_decode(v: V, q: str, out: str):
    """`out` = w' = 2 x the E2M1 value of the 4-bit code `q` (hwsim/golden.py 1b), 5-bit signed: the magnitude
    (0 1 2 3 4 6 8 12 for q[2:0] = 0..7) from the exponent e = q[2:1] and mantissa m = q[0], then the sign q[3]."""
    e1, e0, m = f"{q}[2]", f"{q}[1]", f"{q}[0]"
    mag = [f"{e1} & {e0}", f"{e1} & (~{e0} | {m})", f"(~{e1} & {e0}) | ({e1} & ~{e0} & {m})", f"~{e1} & {m}"]
    v(f"wire [3:0] {out}_mag = {{{', '.join(f'({b})' for b in mag)}}};")
    v(f"wire signed [4:0] {out} = {q}[3] ? -$signed({{1'b0, {out}_mag}}) : $signed({{1'b0, {out}_mag}});")


def write_verilog(cfg: ArrayConfig, outdir: str | Path) -> Path:
    """Write `<module>.v` into outdir (atomically) and return its path."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / f"{module_name(cfg)}.v"
    text = generate(cfg)
    if path.exists() and path.read_text() == text:
        return path
    tmp = path.with_suffix(".v.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
