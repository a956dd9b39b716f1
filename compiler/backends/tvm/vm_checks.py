"""Drop the Relax VM's per-call checks of the weight parameters.

TVM's VMShapeLower makes every call of `main` check each parameter's dtype and rank (`check_tensor_info`) and each
static dimension (`match_shape` with only assert-equal codes): about 850 builtin calls per smollm2-135m decode step,
next to 240 kernel calls, for arrays that never change between calls. The runtime checks each weight's shape and
dtype once, when it loads them (tvm.json records them; runtime/backends/base.py `param_arrays`). The graph inputs
keep their checks, and every match_shape that binds a symbolic dimension (S, P) stays.
"""

from __future__ import annotations

from tvm import relax

CHECKS = ("vm.builtin.check_tensor_info", "vm.builtin.match_shape")
ASSERT_EQUAL = 0  # MatchShapeCode::kAssertEqualToImm: the only code that neither stores nor loads the shape heap


def _static_check(value, weights: set) -> bool:
    if not (isinstance(value, relax.Call) and isinstance(value.op, relax.ExternFunc) and value.op.global_symbol in CHECKS):
        return False
    if not value.args or value.args[0] not in weights:
        return False
    if value.op.global_symbol == "vm.builtin.match_shape":  # (value, heap, ndim, code0, v0, code1, v1, ..., err)
        ndim = int(value.args[2].value)
        return all(int(value.args[3 + 2 * i].value) == ASSERT_EQUAL for i in range(ndim))
    return True


def drop_weight_checks(func: relax.Function, weights_from: int) -> tuple[relax.Function, int]:
    """`func` without the static checks of its parameters weights_from.. (the weights); and how many were dropped."""
    weights = set(func.params[weights_from:])
    blocks, dropped = [], 0
    for blk in func.body.blocks:
        keep = [b for b in blk.bindings if not _static_check(b.value, weights)]
        dropped += len(blk.bindings) - len(keep)
        blocks.append(relax.DataflowBlock(keep) if isinstance(blk, relax.DataflowBlock) else relax.BindingBlock(keep))
    body = relax.SeqExpr(blocks, func.body.body)
    return relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs, func.span), dropped


def drop_checks_pass(weights_from: int):
    """A module pass applying drop_weight_checks to every Relax function (run after VMShapeLower)."""
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="LowbitDropWeightChecks")
    def _run(mod, _ctx):
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                mod[gv] = drop_weight_checks(func, weights_from)[0]
        return mod

    return _run
