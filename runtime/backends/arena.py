"""Host memory for a CPU backend's weights and KV cache: one anonymous mapping, advised for transparent huge pages.

A decode step streams every weight once. In 4 KiB pages a 180 MB step touches ~45,000 pages, far more than the
TLB holds, and each page walk stalls the stream; in 2 MiB pages it touches ~90. On the 2-core EPYC VM this took
smollm2-135m w4g32 decode on tvm-cpu from ~72 to ~85 tok/s at 1 thread (same process, alternating). Linux's
default THP mode (`madvise`) gives huge pages only to memory that asks, hence the madvise here; elsewhere (no
MADV_HUGEPAGE, THP off) the mapping is ordinary memory and nothing else changes.
"""

from __future__ import annotations

import mmap

import numpy as np

ALIGN = 64  # every array starts on a cache line (the compiled kernels use aligned vector loads)
HUGE = 2 << 20


class Arena:
    """Copies of `arrays` laid out in one mapping; `views` are numpy arrays into it, in the same order. The
    mapping lives as long as any view does (numpy keeps the buffer referenced)."""

    def __init__(self, arrays: list[np.ndarray]):
        offsets, n = [], 0
        for a in arrays:
            n = -(-n // ALIGN) * ALIGN
            offsets.append(n)
            n += a.nbytes
        size = -(-max(n, 1) // HUGE) * HUGE
        self.buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            try:
                self.buffer.madvise(mmap.MADV_HUGEPAGE)  # before the first touch: faults then map 2 MiB pages
            except OSError:  # THP compiled out of this kernel
                pass
        base = np.frombuffer(self.buffer, np.uint8)
        self.views = []
        for a, o in zip(arrays, offsets):
            v = base[o:o + a.nbytes].view(a.dtype).reshape(a.shape)
            v[...] = a
            self.views.append(v)
