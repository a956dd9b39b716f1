"""hwsim: models of the lowbit accelerator arrays and what they cost.

designs/    one record per accelerator design (the registry every package reads: DESIGNS)
config.py   ArrayConfig: one array's shape, number formats and the bit widths they imply
golden.py   bit-level integer definition of the arrays (shared with the RTL testbenches)
arrays/     cycle-level models of every design: simulate_linear, tile_cycles, beat_schedule
memory.py   SRAM / DRAM hierarchy (MemoryConfig) and its double-buffered timing model
cost/       area (from our yosys reports), energy (public per-op figures x activity), rooflines
report/     `lowbit report` (Markdown, HTML, PNG plots, CSV/JSON) and `lowbit sweep`
"""
