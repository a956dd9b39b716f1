"""The `hadamard` op on CPUs: the reference's butterfly (compiler.reference.hadamard), so the result is bit for bit
the reference's. Each row of `size` values is copied to a stack buffer, transformed in log2(size) stages (pairs
i, i + h: sum and difference) and scaled once; rows run in parallel when there are enough of them to pay for a
parallel launch (a prefill), serially at decode (a handful of heads)."""

from __future__ import annotations

import math

import numpy as np

from tvm import tirx
from tvm.script import tirx as T

PARALLEL_ROWS = 64  # fewer rows than this (a decode step's heads): one thread


def scale_of(size: int) -> np.ndarray:
    return np.array([1.0 / math.sqrt(size)], np.float32)


def hadamard_prim_func(width: int, size: int) -> tirx.PrimFunc:
    """x f32[R, width], scale f32[1] (float32(1 / sqrt(size)), scale_of) -> y f32[R, width], each block of `size`
    along a row transformed (size a power of two)."""
    stages = size.bit_length() - 1
    blocks = width // size

    @T.macro
    def one_row(x, sc, y, r, buf):
        for b in range(blocks):
            for e in range(size):
                buf[e] = x[r, b * size + e]
            for st in T.unroll(stages):
                h = T.Bind(T.shift_left(T.int64(1), T.Cast("int64", st)))
                for i in range(size // 2):
                    lo = T.Bind(i // h * (h * 2) + i % h)
                    a = T.Bind(buf[lo])
                    c = T.Bind(buf[lo + h])
                    buf[lo] = a + c
                    buf[lo + h] = a - c
            for e in range(size):
                y[r, b * size + e] = buf[e] * sc[0]

    @T.prim_func(private=True)
    def hadamard(var_x: T.handle, var_scale: T.handle, var_y: T.handle):
        # (the scale comes as a one-element tensor: Relax's reshape analysis reads every one-in one-out call_tir
        # function as a reshape candidate and needs a block body for that)
        T.func_attr({"tirx.noalias": True})
        R = T.int64()
        x = T.match_buffer(var_x, (R, width), "float32")
        sc = T.match_buffer(var_scale, (1,), "float32")
        y = T.match_buffer(var_y, (R, width), "float32")
        if R >= PARALLEL_ROWS:
            for r in T.parallel(R):
                buf = T.alloc_buffer((size,), "float32")
                one_row(x, sc, y, r, buf)
        else:
            buf1 = T.alloc_buffer((size,), "float32")
            for r in range(R):
                one_row(x, sc, y, r, buf1)

    return hadamard.with_attr("op_pattern", 8)  # opaque: FuseOps leaves it alone
