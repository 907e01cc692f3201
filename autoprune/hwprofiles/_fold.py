"""Constant folding for kernel counting: the structure of TVM's ``FoldConstant``, none of its work.

``relax.transform.FoldConstant`` compiles and runs every kernel whose inputs are all constants
(batch norm's ``sqrt(var + eps)``, a linear layer's transposed weight), about 90 LLVM builds for
a resnet20, to replace each by the constant it computes. :func:`fused_kernels
<autoprune.hwprofiles._kernels.fused_kernels>` reads only shapes, dtypes and loop nests, never
values, so :func:`fold_constant_shapes` replaces such a kernel by an uninitialised constant of
its output's shape and dtype instead: the same module, up to the constants' values.
``tests/hwprofiles/test_hwprofiles_kernels.py`` checks that the kernel lists are identical.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm

__all__ = ["fold_constant_shapes"]


def _fold(func: Any) -> Any:
    """``func`` (a Relax function after ``LegalizeOps``) with its constant kernels folded."""
    import tvm
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    known: dict[Any, Any] = {}  # a folded variable -> its constant

    def substitute(expr: Any) -> Any:
        if isinstance(expr, relax.Var) and expr in known:
            return known[expr]
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([substitute(field) for field in expr.fields])
        return expr

    def constant_like(var: Any) -> Any | None:
        info = var.ty
        if not isinstance(info, relax.TensorType) or info.shape is None:
            return None
        try:
            shape = [int(d) for d in info.shape]
        except TypeError:  # a symbolic dimension: FoldConstant leaves it too
            return None
        return relax.const(tvm.runtime.empty(shape, info.dtype))

    blocks = []
    for block in func.body.blocks:
        bindings = []
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and value.op.same_as(call_tir):
                args = substitute(value.args[1])
                if all(isinstance(a, tvm.ir.GenericConst) for a in args.fields):
                    constant = constant_like(binding.var)
                    if constant is not None:
                        known[binding.var] = constant
                        continue
                value = relax.Call(
                    value.op, [value.args[0], args, *value.args[2:]], value.attrs, value.ty_args
                )
            elif isinstance(value, relax.Tuple):
                value = substitute(value)
            elif isinstance(value, relax.Var) and value in known:
                known[binding.var] = known[value]
                continue
            elif isinstance(value, tvm.ir.GenericConst):  # a name for a constant: FoldConstant
                known[binding.var] = value  # treats it as the constant
                continue
            bindings.append(relax.VarBinding(binding.var, value))
        blocks.append(type(block)(bindings))
    body = relax.SeqExpr(blocks, substitute(func.body.body))
    folded = relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs)
    return relax.analysis.remove_all_unused(folded)


def fold_constant_shapes() -> tvm.transform.Pass:
    """A module pass in place of ``FoldConstant`` (after ``LegalizeOps``) for kernel counting."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name="FoldConstantShapes")
    def fold(mod: tvm.IRModule, _context: Any) -> tvm.IRModule:
        functions = {
            gvar: _fold(func) if isinstance(func, relax.Function) else func
            for gvar, func in mod.functions.items()
        }
        return tvm.IRModule(functions, attrs=mod.attrs, global_infos=mod.global_infos)

    return fold
