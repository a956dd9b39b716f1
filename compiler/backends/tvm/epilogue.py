"""The end of every qlinear kernel after its per-group dequantization: the A8 per-token activation scale,
then the bias (shared by the fallback and the blocked CPU kernel, whatever their weight layouts)."""

from __future__ import annotations

from tvm import te


def scale_and_bias(y: te.Tensor, sa: te.Tensor | None, bias: te.Tensor | None, attrs: dict | None = None) -> te.Tensor:
    """y [M, N] (already summed over groups) times sa[m] (A8) plus bias[n]; y itself when neither is given and no
    `attrs` are asked for (kernels that replace their body read their shape from the output block's attrs)."""
    if sa is None and bias is None and attrs is None:
        return y

    def out(i, n):
        v = y[i, n]
        if sa is not None:
            v = v * sa[i]
        if bias is not None:
            v = v + bias[n]
        return v

    return te.compute(y.shape, out, name="qlinear_out", attrs=attrs)
