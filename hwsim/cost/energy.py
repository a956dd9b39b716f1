"""Energy of a simulated layer: public per-operation energies times the activity hwsim counts.

Sources (every constant below cites one; the report prints this table):
[H14] M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, 45 nm, 0.9 V:
      8b int add 0.03 pJ, 32b int add 0.1 pJ, 8b int mult 0.2 pJ, 32b int mult 3.1 pJ, fp16 add 0.4 pJ,
      fp16 mult 1.1 pJ; SRAM 64b read 10 pJ (8 KB), 20 pJ (32 KB), 100 pJ (1 MB); DRAM 1.3-2.6 nJ / 64b.
[HAN16] S. Han et al., "EIE", ISCA 2016, Table I (from [H14], 45 nm): 32b SRAM read 5 pJ, 32b DRAM
      read 640 pJ, 32b register file 1 pJ.
[WH] N. Weste, D. Harris, "CMOS VLSI Design", 4th ed.: mirror full adder 28 transistors; yosys's own
      CMOS cost table (kernel/cost.h) counts a 2:1 mux as 12 transistors, a D flip-flop as 16 (rtl/synth.py).

Models (what we assume; the report prints them):
- integer add of w bits: linear through [H14]'s two points: e(w) = 0.03 + (w - 8) * (0.1 - 0.03) / 24 pJ.
- integer multiply a x b bits: linear in the partial-product count a*b through [H14]'s 8x8 and 32x32 points.
- 2:1 mux bit (table lookups, negation selects): an adder bit's energy times 12/28 (transistor ratio [WH]).
- register bit write (flip-flop): one adder bit's energy (a 16T flip-flop plus 12T enable mux ~ a 28T
  full adder [WH]); clock-tree energy of idle flip-flops and leakage are not modelled.
- SRAM access: 5 pJ per 32 bits at 8 KB [HAN16], growing with sqrt(capacity / 8 KB) (this fits [H14]'s
  10/20/100 pJ per 64b at 8 KB/32 KB/1 MB within 15%); writes cost as much as reads.
- DRAM: 640 pJ per 32 bits [HAN16] (the low end of [H14]'s 1.3-2.6 nJ per 64b), not scaled with the node.
- Node scaling from 45 nm: dynamic energy ~ C V^2 with C ~ feature size at the same 0.9 V supply, so
  logic and SRAM energies scale by L/45nm (28 nm: 0.622). A first-order rule, not a PDK characterization.
"""

from __future__ import annotations

import math

# [H14] 45 nm
ADD8_PJ = 0.03
ADD32_PJ = 0.1
MULT8_PJ = 0.2
MULT32_PJ = 3.1
FP16_ADD_PJ = 0.4
FP16_MULT_PJ = 1.1
# [HAN16] 45 nm
SRAM32_8KB_PJ = 5.0
DRAM32_PJ = 640.0
# [WH] transistor counts
MUX2_T, FULL_ADDER_T = 12, 28

NODES_NM = {"45nm": 45.0, "28nm": 28.0, "22nm": 22.0, "16nm": 16.0, "7nm": 7.0}


def node_scale(node: str) -> float:
    """Energy factor from the 45 nm figures to `node` (C ~ L at a fixed 0.9 V supply)."""
    if node not in NODES_NM:
        raise ValueError(f"unknown node {node!r}; choose one of {', '.join(NODES_NM)}")
    return NODES_NM[node] / 45.0


def add_pj(w: float) -> float:
    return ADD8_PJ + (w - 8) * (ADD32_PJ - ADD8_PJ) / 24.0


def add_bit_pj() -> float:
    """Marginal energy of one adder bit (slope of the [H14] line)."""
    return (ADD32_PJ - ADD8_PJ) / 24.0


def mult_pj(a: float, b: float) -> float:
    return MULT8_PJ + (a * b - 64) * (MULT32_PJ - MULT8_PJ) / (1024 - 64)


def mult_bit2_pj() -> float:
    return (MULT32_PJ - MULT8_PJ) / (1024 - 64)


def sram_pj_per_byte(capacity_bytes: float) -> float:
    return SRAM32_8KB_PJ / 4.0 * math.sqrt(max(capacity_bytes, 1024.0) / 8192.0)


def dram_pj_per_byte() -> float:
    return DRAM32_PJ / 4.0


def constants_table(node: str = "28nm") -> list[dict]:
    """The constants and models as rows (name, value at 45 nm, unit, source) for the report."""
    s = node_scale(node)
    return [
        {"name": "int8 add", "value_45nm": ADD8_PJ, "unit": "pJ", "source": "Horowitz ISSCC 2014"},
        {"name": "int32 add", "value_45nm": ADD32_PJ, "unit": "pJ", "source": "Horowitz ISSCC 2014"},
        {"name": "int8 mult", "value_45nm": MULT8_PJ, "unit": "pJ", "source": "Horowitz ISSCC 2014"},
        {"name": "int32 mult", "value_45nm": MULT32_PJ, "unit": "pJ", "source": "Horowitz ISSCC 2014"},
        {"name": "fp16 add", "value_45nm": FP16_ADD_PJ, "unit": "pJ", "source": "Horowitz ISSCC 2014"},
        {"name": "fp16 mult", "value_45nm": FP16_MULT_PJ, "unit": "pJ", "source": "Horowitz ISSCC 2014"},
        {"name": "SRAM read, 32 bit, 8 KB", "value_45nm": SRAM32_8KB_PJ, "unit": "pJ", "source": "Han et al. ISCA 2016 Table I (from Horowitz)"},
        {"name": "DRAM read, 32 bit", "value_45nm": DRAM32_PJ, "unit": "pJ", "source": "Han et al. ISCA 2016 Table I (from Horowitz); not node-scaled"},
        {"name": "add, per bit (slope)", "value_45nm": add_bit_pj(), "unit": "pJ/bit", "source": "line through the int8/int32 adds"},
        {"name": "mult, per partial-product bit", "value_45nm": mult_bit2_pj(), "unit": "pJ", "source": "line through the int8/int32 mults"},
        {"name": "2:1 mux bit", "value_45nm": add_bit_pj() * MUX2_T / FULL_ADDER_T, "unit": "pJ", "source": "adder bit x 12/28 transistors (Weste-Harris; yosys cost.h)"},
        {"name": "register bit write", "value_45nm": add_bit_pj(), "unit": "pJ", "source": "assumed = one adder bit (16T DFF + 12T enable ~ 28T full adder)"},
        {"name": f"node factor 45nm -> {node}", "value_45nm": s, "unit": "x", "source": "C ~ L at fixed 0.9 V (first-order rule, not a PDK)"},
    ]


def layer_energy_pj(cfg, activity: dict, node: str = "28nm", memory=None) -> dict[str, float]:
    """Energy of one simulated layer in pJ by part; "total" is the sum of the parts.

    cfg: the ArrayConfig; activity: LayerRun.activity (hwsim.arrays); memory: the MemoryConfig the layer
    ran with (SRAM capacities; default MemoryConfig()). Parts: adds, mults, muxes (table lookups and
    negations), registers, sram_weight, sram_act, sram_out, dram (weights, activations and outputs)."""
    from hwsim.memory import MemoryConfig

    mem = memory or MemoryConfig()
    s = node_scale(node)
    a = activity
    # adds and mults: a fixed part per operation plus a per-bit part (the [H14] lines)
    add_fixed = ADD8_PJ - 8 * add_bit_pj()
    mult_fixed = MULT8_PJ - 64 * mult_bit2_pj()
    parts = {
        "adds": s * (a.get("adds", 0) * add_fixed + a.get("add_bits", 0) * add_bit_pj()),
        "mults": s * (a.get("mults", 0) * mult_fixed + a.get("mult_bits2", 0) * mult_bit2_pj()),
        "muxes": s * a.get("mux_bits", 0) * add_bit_pj() * MUX2_T / FULL_ADDER_T,
        "registers": s * a.get("reg_bit_writes", 0) * add_bit_pj(),
        "sram_weight": s * sram_pj_per_byte(mem.weight_sram_kib * 1024 / (2 if mem.double_buffer else 1))
        * (a.get("sram_read_bytes_weight", 0) + a.get("sram_write_bytes_weight", 0)),
        "sram_act": s * sram_pj_per_byte(mem.act_sram_kib * 1024)
        * (a.get("sram_read_bytes_act", 0) + a.get("sram_write_bytes_act", 0)),
        "sram_out": s * sram_pj_per_byte(mem.out_sram_kib * 1024)
        * (a.get("sram_write_bytes_out", 0) + a.get("sram_read_bytes_out", 0)),
        "dram": dram_pj_per_byte() * a.get("dram_bytes", 0),
    }
    parts = {k: float(v) for k, v in parts.items()}
    parts["total"] = float(sum(parts.values()))
    return parts
