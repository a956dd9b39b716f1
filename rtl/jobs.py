"""yosys synthesis as jobs of hwsim.report.engine (local processes or Ray tasks, cached by their inputs).

    synth_job(design, params) -> Job     rtl.synth.synthesize on one array; its key: the parameters, the yosys
                                         version and a hash of the generators and the synthesis flow
"""

from __future__ import annotations

from hwsim.report.engine import Job, lowbit_version, source_hash, tool_version

SYNTH_SOURCES = ("rtl/gen", "rtl/synth.py", "rtl/sim.py", "hwsim/config.py", "hwsim/designs", "hwsim/golden.py")


def synthesize_array(design: str, params: dict) -> dict:
    """rtl.synth.synthesize's report (the job's result; its `seconds` is the one number that varies between runs)."""
    from rtl.synth import synthesize

    return synthesize(design, params)


def synth_job(design: str, params: dict) -> Job:
    label = f"synth {design} " + " ".join(f"{k}={v}" for k, v in sorted(params.items()))
    versions = {"lowbit": lowbit_version(), "yosys": tool_version("yosys", "-V"), "source": source_hash(*SYNTH_SOURCES)}
    return Job("synth", label, synthesize_array, {"design": design, "params": dict(params)}, versions)
