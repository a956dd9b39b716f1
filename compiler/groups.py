"""The group size a layer actually uses, for the quantizer and the cost model alike.

A layer whose K (input features) is not a multiple of the requested group uses the largest supported group
size below it that divides K (128 -> 64 -> 32), else one group per output channel (a group of K). SmolLM2's
hidden size 576 = 9 * 64, so w4g128 gives its K=576 layers groups of 64 and its K=1536 layers groups of 128.
Groups of 16 (the K-quants' sub-blocks: Q2_K, Q3_K, Q6_K) are used where asked for; the fallback stops at 32.
"""

from __future__ import annotations

GROUP_SIZES = (16, 32, 64, 128)  # the group sizes of the quant spec grammar (compiler.quant.spec)
FALLBACK_MIN = 32  # the smallest group a larger one falls back to


def layer_group(k: int, group: int) -> int:
    """Group length for a layer with k input features when `group` is asked for (0: per-channel, i.e. k)."""
    if group == 0 or k <= 0:
        return k
    for g in (group, *sorted((s for s in GROUP_SIZES if FALLBACK_MIN <= s < group), reverse=True)):
        if k % g == 0:
            return g
    return k
