"""Cost model: area (area.py, from our yosys reports), energy (energy.py, public per-operation figures
times hwsim's activity counts), latency and rooflines (roofline.py). Every constant names its source."""
