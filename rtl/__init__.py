"""Hardware: generated Verilog for the low-bit arrays, their cocotb testbenches, simulators and synthesis.

- rtl.gen.common.generate(cfg) / write_verilog(cfg, dir): Verilog-2005 for an hwsim.config.ArrayConfig
  (every design of hwsim.designs; interface and epilogue in rtl/gen/common.py, formats in hwsim/golden.py).
- rtl.sim.run_sim(design, params, simulator="icarus", vectors=1000, waves=None, seed=0) -> SimResult:
  build + cocotb regression (rtl/tb/array_tb.py) bit-exact against hwsim.golden.
- rtl.synth.synthesize(design, params, out_json=None) -> dict: yosys cells and transistor estimates;
  `python -m rtl.synth` prints the area table (saved reports in rtl/reports/synth/).
- rtl.lint.lint(cfg, dir): Verilator --lint-only -Wall.
"""
