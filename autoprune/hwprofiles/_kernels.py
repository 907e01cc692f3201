"""Costs of the fused TVM kernels of a model, and a roofline latency/energy estimate over them.

Where the target cannot be measured, latency is estimated per fused TVM kernel from the device
profile. A module-level roofline (:func:`~autoprune.hwprofiles.estimate_hardware`)
charges one kernel launch per conv and treats batchnorm/activations as free riders by fiat; this
module lets TVM decide what fuses. The imported Relax module goes through the legalization and
fusion passes of TVM 0.27's default CPU pipeline (``relax.backend.cpu_generic.legalize_passes``):

``DecomposeOpsForInference`` (inference batch_norm -> elementwise arithmetic, as
``tvm.compile`` callers do before fusion), ``CanonicalizeBindings`` (drops the ``(out, mean,
var)`` tuple that batch_norm leaves behind, which would otherwise stop fusion),
``LegalizeOps``, ``AnnotateTIROpPattern``, ``FoldConstant``, ``FuseOps``, ``FuseTIR``, then
``RewriteDataflowReshape`` (reshapes become views, not kernels; ``dataflow_lower_passes``).
``FoldConstant`` is :func:`~._fold.fold_constant_shapes`: the same module without compiling the
folded kernels, which took most of the lowering's time.

Each ``R.call_tir`` left in ``main`` is one kernel launch. For its PrimFunc:

* ``macs``: every ``BufferStore`` of the form ``C[i] = C[i] + a * b`` (casts allowed around the
  product, as in int8 x int8 -> int32 kernels) counts the product of the extents of the loops
  around it. Sums without a product (average pooling, ``mean``) and ``max`` reductions count
  none: the project's convention ("FLOPs" means multiply-accumulates).
* ``flops``: TVM's own count, ``tvm.s_tir.analysis.estimate_tir_flops`` (a MAC is 2, every
  elementwise op of the fused epilogue counts too).
* bytes: the sizes of the PrimFunc's parameter buffers at their dtypes; arguments that are Relax
  constants (the weights, as ``from_exported_program`` embeds them) are ``bytes_weights``, the
  other arguments ``bytes_in``, the output buffers ``bytes_out``. Intermediate buffers of a fused
  kernel are not counted: fusion keeps them on chip, which is the point of fusing.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autoprune._interrupts import interrupts_deferred
from autoprune.errors import ConfigError, UnknownNameError
from autoprune.hwprofiles._estimate import HardwareEstimate, _estimate_layer
from autoprune.hwprofiles._profile import PRECISION_BITS, DeviceProfile
from autoprune.spaces import LayerCost

if TYPE_CHECKING:
    import tvm

__all__ = ["KERNEL_CLASSES", "KernelCost", "estimate_from_kernels", "fused_kernels"]

_logger = logging.getLogger("autoprune.hwprofiles.kernels")

#: ``LayerEstimate.op`` of every row of a per-kernel estimate; the kernel's name says what it
#: fuses (``fused_conv2d_subtract_divide_multiply_add1_relu``).
KERNEL_OP = "tvm_kernel"

#: What a kernel's anchor op computes, for per-class efficiencies (``kernel_class_efficiency``):
#: ``conv`` a spatial convolution (the reference, efficiency factor 1), ``conv3x3`` a dense 3x3
#: one at stride 1 (the shape runtimes run by Winograd's algorithm), ``depthwise`` one with one
#: input channel per group, ``pointwise`` a 1x1 convolution, ``fc`` a matrix product (linear
#: layer), ``other`` the rest (pooling, additions, concatenations: no MACs to speak of).
KERNEL_CLASSES = ("conv", "conv3x3", "depthwise", "pointwise", "fc", "other")


@dataclass(frozen=True)
class KernelCost:
    """Cost of one fused TVM kernel (one ``R.call_tir`` in ``main``), batch 1.

    Attributes:
        name: the PrimFunc's name, e.g. ``"fused_conv2d_subtract_divide_multiply_add1_relu"``
            (TVM names a fused kernel after the ops it fuses, anchor op first). A PrimFunc called
            twice appears twice, with the same name.
        flops: floating-point (or integer) operations by TVM's ``estimate_tir_flops``: 2 per
            MAC plus the fused elementwise epilogue.
        macs: multiply-accumulates (see the module docstring for what counts as one).
        bytes_in: bytes of the activation inputs (non-constant arguments), at their dtypes.
        bytes_out: bytes of the outputs.
        bytes_weights: bytes of the constant arguments (weights, biases, folded batchnorm
            vectors); 0 when the weights are not separable (passed to ``main`` as inputs with no
            ``num_input`` attribute), in which case they are in ``bytes_in``.
        dtype: dtype of the (first) output buffer, e.g. ``"float32"``.
        kernel_class: one of :data:`KERNEL_CLASSES`, from the anchor op and its weight's shape.

    Example:
        >>> k = KernelCost(name="fused_conv2d_relu", flops=29_696, macs=13_824, bytes_in=768,
        ...                bytes_out=2_048, bytes_weights=864, dtype="float32")
        >>> k.bytes_moved, k.op
        (3680, 'conv2d')
        >>> KernelCost.from_dict(k.to_dict()) == k
        True
    """

    name: str
    flops: int
    macs: int
    bytes_in: int
    bytes_out: int
    bytes_weights: int
    dtype: str
    kernel_class: str = "other"

    @property
    def bytes_moved(self) -> int:
        """``bytes_in + bytes_weights + bytes_out``: the kernel's DRAM traffic, bytes."""
        return self.bytes_in + self.bytes_weights + self.bytes_out

    @property
    def op(self) -> str:
        """The first (anchor) op of the kernel's name: ``"conv2d"``, ``"matmul"``, ``"mean"``."""
        return _anchor_op(self.name)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; ``KernelCost.from_dict(k.to_dict()) == k``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KernelCost:
        """Inverse of :meth:`to_dict`."""
        return cls(**dict(data))


def _anchor_op(name: str) -> str:
    parts = name.split("_")
    head = parts[1] if parts[0] == "fused" and len(parts) > 1 else parts[0]
    return head.rstrip("0123456789")  # FuseTIR numbers repeated op names: conv2d1, add9


# --------------------------------------------------------------------------------------------
# lowering
# --------------------------------------------------------------------------------------------


def _fusion_passes() -> list[tvm.transform.Pass]:
    from tvm import relax

    from autoprune.hwprofiles._fold import fold_constant_shapes

    t = relax.transform
    return [
        t.DecomposeOpsForInference(),
        t.CanonicalizeBindings(),
        t.LegalizeOps(),
        t.AnnotateTIROpPattern(),
        fold_constant_shapes(),  # constant-only kernels (batchnorm scales) become constants
        t.FuseOps(),
        t.FuseTIR(),
        t.RewriteDataflowReshape(),
    ]


def _lower(mod: tvm.IRModule) -> tvm.IRModule:
    import tvm

    with interrupts_deferred():  # TVM's passes call back into Python from C++
        return tvm.transform.Sequential(_fusion_passes())(mod)


# --------------------------------------------------------------------------------------------
# TIR analysis
# --------------------------------------------------------------------------------------------


def _strip_casts(expr: Any) -> Any:
    from tvm import tirx

    while isinstance(expr, tirx.Cast):
        expr = expr.value
    return expr


def _is_mac(store: Any) -> bool:
    """``C[i] = C[i] + a * b`` (either operand order, casts around the product allowed)."""
    import tvm
    from tvm import tirx

    value = store.value
    if not isinstance(value, tirx.Add):
        return False
    for acc, prod in ((value.a, value.b), (value.b, value.a)):
        if (
            isinstance(acc, tvm.ir.TensorLoad)
            and acc.source.same_as(store.buffer)
            and isinstance(_strip_casts(prod), tirx.Mul)
        ):
            return True
    return False


def _count_macs(func: tvm.tirx.PrimFunc, name: str) -> int:
    from tvm import tirx
    from tvm.s_tir import SBlock, SBlockRealize

    total = 0
    stack: list[tuple[Any, int]] = [(func.body, 1)]
    while stack:
        stmt, trips = stack.pop()
        if isinstance(stmt, tirx.For):
            try:
                extent = int(stmt.extent)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"kernel {name!r} has a loop of symbolic extent {stmt.extent}; lower the "
                    "model at a fixed input shape (import_to_relax with a (C, H, W) shape)"
                ) from None
            stack.append((stmt.body, trips * extent))
        elif isinstance(stmt, SBlockRealize):
            stack.append((stmt.block, trips))
        elif isinstance(stmt, SBlock):  # the init statement (C[i] = 0) is not a MAC: skip it
            stack.append((stmt.body, trips))
        elif isinstance(stmt, tirx.SeqStmt):
            stack.extend((child, trips) for child in stmt.seq)
        elif isinstance(stmt, tirx.IfThenElse):  # both branches: an upper bound
            stack.append((stmt.then_case, trips))
            if stmt.else_case is not None:
                stack.append((stmt.else_case, trips))
        elif isinstance(stmt, tirx.BufferStore):
            if _is_mac(stmt):
                total += trips
        elif hasattr(stmt, "body"):  # LetStmt, AttrStmt, DeclBuffer, ...
            stack.append((stmt.body, trips))
    return total


def _buffer_bytes(buffer: Any, name: str) -> int:
    import tvm

    elements = 1
    for dim in buffer.shape:
        try:
            elements *= int(dim)
        except (TypeError, ValueError):
            raise ConfigError(
                f"kernel {name!r} has a buffer of symbolic shape {list(buffer.shape)}; lower the "
                "model at a fixed input shape (import_to_relax with a (C, H, W) shape)"
            ) from None
    dtype = tvm.runtime.DataType(str(buffer.dtype))
    return elements * dtype.bits * dtype.lanes // 8


def _flops(func: tvm.tirx.PrimFunc, macs: int, name: str) -> int:
    import tvm

    try:
        return int(tvm.s_tir.analysis.estimate_tir_flops(tvm.IRModule({"main": func})))
    except Exception as err:  # TVM's counter rejects some intrinsics; never fail over it
        _logger.warning("kernel %r: estimate_tir_flops failed (%s); using 2 * MACs", name, err)
        return 2 * macs


def kernel_class(
    op: str,
    weight_shapes: Sequence[Sequence[int]],
    input_shape: Sequence[int] = (),
    macs: int = 0,
) -> str:
    """The :data:`KERNEL_CLASSES` entry of a kernel with anchor ``op``, constant-argument shapes
    ``weight_shapes`` (a convolution's weight is ``(O, I / groups, kh, kw)``), first activation
    input of shape ``input_shape`` (NCHW) and ``macs`` multiply-accumulates. A 3x3 convolution
    is ``conv3x3`` when it is dense (``I / groups`` is the input's channel count) and keeps the
    input's spatial size (stride 1: its MACs over ``O * I * 9`` are the input's pixels).

    Example:
        >>> kernel_class("conv2d", [(32, 1, 3, 3), (1, 32, 1, 1)]), kernel_class("matmul", [])
        ('depthwise', 'fc')
        >>> kernel_class("conv2d", [(8, 4, 3, 3)], (1, 4, 10, 10), 8 * 4 * 9 * 100)
        'conv3x3'
        >>> kernel_class("conv2d", [(8, 4, 3, 3)], (1, 4, 10, 10), 8 * 4 * 9 * 25)
        'conv'
    """
    if op in ("matmul", "dense", "linear"):
        return "fc"
    if not op.startswith("conv"):
        return "other"
    kernels = [shape for shape in weight_shapes if len(shape) >= 3]
    if not kernels:
        return "conv"
    weight = [int(d) for d in kernels[0]]
    spatial = math.prod(weight[2:])
    if spatial == 1:
        return "pointwise"
    if weight[1] == 1:
        return "depthwise"
    if weight[2:] == [3, 3] and len(input_shape) == 4 and int(input_shape[1]) == weight[1]:
        output_pixels = macs / (weight[0] * weight[1] * spatial)
        if 2 * output_pixels > int(input_shape[2]) * int(input_shape[3]):
            return "conv3x3"
    return "conv"


def fused_kernels(mod: tvm.IRModule) -> list[KernelCost]:
    """Lower a Relax module through TVM's fusion passes and cost each kernel ``main`` launches.

    Args:
        mod: a Relax module as imported from PyTorch
            (:func:`~autoprune.hwprofiles.import_to_relax`), at a fixed input shape. It is not
            modified.

    Returns:
        One :class:`KernelCost` per ``R.call_tir`` in ``main``, in execution order.

    Raises:
        ConfigError: a kernel has a symbolic shape (the module was imported with dynamic shapes).

    Example:
        >>> from torch import nn
        >>> from autoprune.hwprofiles import import_to_relax
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
        ...                     nn.ReLU())
        >>> [(k.name, k.macs) for k in fused_kernels(import_to_relax(net, (3, 8, 8)))]
        [('fused_conv2d_subtract_divide_multiply_add1_relu', 13824)]
    """
    import tvm
    from tvm import relax, tirx
    from tvm.tirx.buffer import BufferType

    start = time.perf_counter()
    lowered = _lower(mod)
    main = lowered["main"]
    num_input = main.attrs.get("num_input") if main.attrs is not None else None
    weight_params = set(main.params[int(num_input) :]) if num_input is not None else set()
    call_tir = tvm.ir.Op.get("relax.call_tir")

    calls: list[Any] = []

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir):
            calls.append(expr)

    relax.analysis.post_order_visit(main.body, visit)

    kernels = []
    for call in calls:
        gvar = call.args[0]
        name = gvar.name_hint
        func = lowered[gvar]
        assert isinstance(func, tirx.PrimFunc), f"call_tir of {name!r} is not a PrimFunc"
        args = list(call.args[1].fields)
        # TVM 0.27 (tirx): a tensor parameter is a Var typed as a buffer (shape, dtype).
        buffers = [p for p in func.params if isinstance(p.ty, BufferType)]
        bytes_in = bytes_weights = 0
        weight_shapes, input_shapes = [], []
        for arg, buffer in zip(args, buffers[: len(args)], strict=True):
            size = _buffer_bytes(buffer, name)
            if isinstance(arg, tvm.ir.GenericConst) or arg in weight_params:
                bytes_weights += size
                weight_shapes.append([int(d) for d in buffer.shape])
            else:
                bytes_in += size
                input_shapes.append([int(d) for d in buffer.shape])
        outputs = buffers[len(args) :]
        macs = _count_macs(func, name)
        kernels.append(
            KernelCost(
                name=name,
                flops=_flops(func, macs, name),
                macs=macs,
                bytes_in=bytes_in,
                bytes_out=sum(_buffer_bytes(b, name) for b in outputs),
                bytes_weights=bytes_weights,
                dtype=str(outputs[0].dtype) if outputs else "float32",
                kernel_class=kernel_class(
                    _anchor_op(name), weight_shapes, input_shapes[0] if input_shapes else (), macs
                ),
            )
        )
    _logger.debug(
        "%d fused kernels, %d MACs, lowered in %.2f s",
        len(kernels),
        sum(k.macs for k in kernels),
        time.perf_counter() - start,
    )
    return kernels


# --------------------------------------------------------------------------------------------
# estimate
# --------------------------------------------------------------------------------------------


def _kernel_row(kernel: KernelCost, weight_bits: int, activation_bits: int) -> LayerCost:
    """The kernel as a :class:`~autoprune.spaces.LayerCost` at the given bits per element.

    Element counts come from the bytes at the kernel's dtype, so a float32 kernel estimated at
    int8 moves a quarter of the bytes; MACs are unchanged.
    """
    element_bytes = _dtype_bytes(kernel.dtype)
    weights = kernel.bytes_weights // element_bytes
    return LayerCost(
        name=kernel.name,
        op=KERNEL_OP,
        macs=kernel.macs,
        params=weights,
        weight_bits=weight_bits,
        activation_bits=activation_bits,
        input_elements=kernel.bytes_in // element_bytes,
        output_elements=kernel.bytes_out // element_bytes,
        weight_elements=weights,
    )


def _dtype_bytes(dtype: str) -> int:
    """Bytes per element of a TVM dtype string: ``"float32"`` -> 4, ``"int8"`` -> 1, bool -> 1."""
    match = re.search(r"(\d+)$", dtype)
    return max(1, int(match.group(1)) // 8) if match else 1


def estimate_from_kernels(
    kernels: Iterable[KernelCost],
    profile: DeviceProfile,
    *,
    precision: str = "fp32",
    bits: Sequence[tuple[int, int]] | None = None,
) -> HardwareEstimate:
    """Estimate batch-1 latency (ms) and energy (mJ) from a model's fused TVM kernels.

    Per kernel: ``max(macs / (peak[precision] * efficiency(precision, class)), bytes_moved /
    (bandwidth * memory_efficiency)) + kernel_launch_overhead``, summed over the kernels (batch
    1, one stream); energy is :mod:`~autoprune.hwprofiles._estimate`'s Horowitz model (the same
    code, fed one row per kernel). Every kernel is one launch: a standalone ReLU that TVM did not
    fuse pays its launch, unlike in the module-level estimate.

    Args:
        kernels: from :func:`fused_kernels`.
        profile: the target device.
        precision: execution precision, ``"fp32"``, ``"fp16"`` or ``"int8"``. Bytes are rescaled
            from the kernel's dtype to this width (a float32 kernel at int8 moves a quarter of
            the bytes). A precision the profile lacks runs at the narrowest native precision
            that covers its bits (as in ``estimate_hardware``).
        bits: ``(weight_bits, activation_bits)`` per kernel, in order, instead of one
            ``precision`` for all (a mixed-precision candidate; see ``estimate_with_tvm``).

    Raises:
        UnknownNameError: ``precision`` is not one of ``fp32``, ``fp16``, ``int8``.

    Example:
        >>> from torch import nn
        >>> from autoprune.hwprofiles import import_to_relax, load_profile
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        >>> est = estimate_from_kernels(fused_kernels(import_to_relax(net, (3, 8, 8))),
        ...                             load_profile("jetson"))
        >>> est.method, est.latency_source
        ('per fused TVM kernel (1 kernels) over profile jetson-orin-nano', 'estimated')
    """
    if precision not in PRECISION_BITS:
        raise UnknownNameError("precision", precision, list(PRECISION_BITS))
    kernels = list(kernels)
    if bits is None:
        bits = [(PRECISION_BITS[precision], PRECISION_BITS[precision])] * len(kernels)
    elif len(bits) != len(kernels):
        raise ConfigError(f"`bits` has {len(bits)} entries for {len(kernels)} kernels")
    rows = tuple(
        _estimate_layer(_kernel_row(k, w, a), profile, k.kernel_class)
        for k, (w, a) in zip(kernels, bits, strict=True)
    )
    estimate = HardwareEstimate(
        latency_ms=sum(row.latency_ms for row in rows),
        energy_mj=sum(row.energy_mj for row in rows),
        layers=rows,
        method=f"per fused TVM kernel ({len(rows)} kernels) over profile {profile.name}",
        profile=profile.name,
        expected_error=profile.expected_error,
    )
    _logger.debug(
        "%d kernels on %s at %s: %.4f ms, %.4f mJ (estimated)",
        len(rows),
        profile.name,
        precision,
        estimate.latency_ms,
        estimate.energy_mj,
    )
    return estimate
