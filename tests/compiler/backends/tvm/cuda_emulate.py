"""Run one generated CUDA kernel on the CPU, for machines without a GPU: the kernel's text is compiled with g++
as C++ (threadIdx thread-local, `__shared__` arrays static, `__syncthreads()` a barrier of the block's threads,
half = _Float16, which rounds as CUDA's conversion does), and each block runs as one std::thread per CUDA
thread, blocks one after another. Good for indexing, tiling, padding and missing-barrier mistakes of a
schedule; it says nothing about speed. Warp intrinsics (shuffles) are not emulated."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

HEADER = r"""
#include <cstdint>
#include <thread>
#include <barrier>
#include <vector>
#include <cstring>
typedef _Float16 half;
static inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
#define uchar unsigned char
#define __global__
#define __launch_bounds__(n)
struct EmuDim3 { unsigned x, y, z; };
static thread_local EmuDim3 threadIdx;
static EmuDim3 blockIdx;
static std::barrier<>* emu_barrier;
static inline void __syncthreads() { emu_barrier->arrive_and_wait(); }
template <class A, class B> static inline auto min(A a, B b) { return a < b ? a : b; }
template <class A, class B> static inline auto max(A a, B b) { return a < b ? b : a; }
"""


def kernel_text(src: str, name: str) -> tuple[str, list[tuple[str, str]]]:
    """The definition of __global__ `name` in `src` and its parameters [(C type, name)]."""
    m = re.search(r'^extern "C" __global__ void __launch_bounds__\(\d+\) ' + re.escape(name) + r"\(([^)]*)\) \{$", src, re.M)
    if m is None:
        raise KeyError(f"no kernel {name} in the source")
    end = src.index("\n}\n", m.end())
    params = []
    for p in m.group(1).split(","):
        words = p.replace("__restrict__", "").split()
        params.append((" ".join(words[:-1]), words[-1]))
    return src[m.start() : end + 3], params


class EmulatedKernel:
    def __init__(self, src: str, name: str):
        if shutil.which("g++") is None:
            raise RuntimeError("g++ is needed to emulate CUDA kernels on the CPU")
        text, self.params = kernel_text(src, name)
        # shared memory: one static array for all threads of the block (alignas must come first in C++)
        text = re.sub(r"__shared__ (alignas\(\d+\) )?", lambda m: (m.group(1) or "") + "static ", text)
        casts = ", ".join(f"({t})args[{i}]" if "*" in t else f"*({t}*)args[{i}]" for i, (t, _) in enumerate(self.params))
        launcher = f"""
extern "C" void emulate(unsigned gx, unsigned gy, unsigned tx, unsigned ty, void** args) {{
  std::barrier<> bar(tx * ty);
  emu_barrier = &bar;
  for (unsigned by = 0; by < gy; ++by)
    for (unsigned bx = 0; bx < gx; ++bx) {{
      blockIdx = EmuDim3{{bx, by, 0}};
      std::vector<std::thread> threads;
      for (unsigned y = 0; y < ty; ++y)
        for (unsigned x = 0; x < tx; ++x)
          threads.emplace_back([=] {{ threadIdx = EmuDim3{{x, y, 0}}; {name}({casts}); }});
      for (auto& t : threads) t.join();
    }}
}}
"""
        self._tmp = tempfile.TemporaryDirectory()
        d = Path(self._tmp.name)
        (d / "k.cpp").write_text(HEADER + text + launcher)
        r = subprocess.run(["g++", "-O1", "-std=c++20", "-shared", "-fPIC", "-pthread", "-w", "-o", str(d / "k.so"), str(d / "k.cpp")], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"g++ failed on the emulated kernel:\n{r.stderr[-3000:]}")
        self.lib = ctypes.CDLL(str(d / "k.so"))

    def __call__(self, grid: tuple[int, int], block: tuple[int, int], *args):
        """args in the kernel's parameter order: numpy arrays for pointers, Python ints for scalars."""
        keep, ptrs = [], []
        for (t, _), a in zip(self.params, args, strict=True):
            if "*" in t:
                assert isinstance(a, np.ndarray) and a.flags.c_contiguous
                ptrs.append(a.ctypes.data_as(ctypes.c_void_p))
            else:
                v = ctypes.c_int64(a) if "64" in t else ctypes.c_int32(a)
                keep.append(v)
                ptrs.append(ctypes.cast(ctypes.pointer(v), ctypes.c_void_p))
        arr = (ctypes.c_void_p * len(ptrs))(*ptrs)
        self.lib.emulate(grid[0], grid[1], block[0], block[1], arr)
