"""Hardware: generated Verilog for the low-bit arrays, their cocotb testbenches, simulators and synthesis.

rtl takes array parameters (bit widths, activation mode, group size, shapes: hwsim.config.ArrayConfig) and
integer job inputs (hwsim.golden.TileInputs); it never imports the quantizer or the frontends.

- rtl.gen.common.generate(cfg) / write_verilog(cfg, dir): Verilog-2005 for an ArrayConfig of any design of
  the registry (hwsim.designs: each record names its generator in rtl/gen); the shared interface and
  epilogue in rtl/gen/common.py, the ports as records in rtl/gen/ports.py, formats in hwsim/golden.py.
- rtl.tb: the cocotb testbenches (array_tb: the regression; layer_tb: a compiled layer's jobs; timing_tb:
  planned schedules for the hwsim agreement tests), all on rtl.tb.array_tb.ArrayTB.
- rtl.sim.run_testbench(cfg, module, config, simulator, tiles=...) -> TestbenchRun: build, run one testbench,
  read its results. rtl.sim.run_sim(design, params, simulator="icarus", vectors=1000, waves=None, seed=0,
  tiles=None) -> SimResult: the regression, bit-exact against hwsim.golden.
- rtl.synth.synthesize(design, params, out_json=None) -> dict: yosys cells and transistor estimates;
  `python -m rtl.synth` prints the area table (saved reports in rtl/reports/synth/).
- rtl.lint.lint(cfg, dir): Verilator --lint-only -Wall.
- rtl.jobs.synth_job(design, params): a synthesis as a job of hwsim.report.engine (local or Ray, cached).
"""
