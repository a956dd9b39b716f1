"""The sparse side matrix of dense-and-sparse weights (IR op `sparse_matmul`, compiler.quant.outliers) as a TE
kernel: y[m, n] = sum_c x[m, cols[n, c]] * f32(vals[n, c]), a gather per entry, the C entries of a row summed in
order in fp32. It is small (C is about 1% of K), so the schedule only spreads the (m, n) outputs: over CPU
threads, or one CUDA thread each."""

from __future__ import annotations

from tvm import te, tirx


def sparse_matmul_te(x: te.Tensor, cols: te.Tensor, vals: te.Tensor):
    m = x.shape[0]
    n, c = cols.shape
    r = te.reduce_axis((0, c), name="c")
    return te.compute(
        (m, n),
        lambda i, j: te.sum(x[i, cols[j, r].astype("int64")] * vals[j, r].astype("float32"), axis=r),
        name="sparse_matmul",
    )


def schedule(kind: str):
    def apply(func: tirx.PrimFunc) -> tirx.PrimFunc:
        from tvm import s_tir

        sch = s_tir.Schedule(func)
        blk = sch.get_sblock("sparse_matmul")
        i, j, _ = sch.get_loops(blk)
        fused = sch.fuse(i, j)
        if kind == "cuda":
            bx, tx = sch.split(fused, [None, 128])
            sch.bind(bx, "blockIdx.x")
            sch.bind(tx, "threadIdx.x")
        else:
            sch.parallel(fused)
        return sch.mod["main"].with_attr("tirx.is_scheduled", True)

    return apply
