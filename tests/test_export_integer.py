"""The integer (QDQ) form of fake-quantized layers computes what the trained layers compute,
in PyTorch and in onnxruntime, and batch norms fold into it exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from autoprune.export import fold_batch_norms, integer_form
from autoprune.export._formats import _onnx
from autoprune.spaces import QuantConv2d, QuantLinear


def _trained(weight_bits: int, activation_bits: int, *, signed: bool) -> nn.Sequential:
    """conv -> BN -> ReLU -> quantized conv -> BN -> flatten -> quantized linear, calibrated by
    three training batches (inputs signed or not), in evaluation mode."""
    torch.manual_seed(0)
    bits = {"weight_bits": weight_bits, "activation_bits": activation_bits}
    model = nn.Sequential(
        QuantConv2d.from_float(nn.Conv2d(3, 8, 3, padding=1), **bits),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        QuantConv2d.from_float(nn.Conv2d(8, 8, 3, padding=1, groups=2), **bits),
        nn.BatchNorm2d(8),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        QuantLinear.from_float(nn.Linear(32, 5), **bits),
    )
    for _ in range(3):
        x = torch.randn(16, 3, 8, 8) if signed else torch.rand(16, 3, 8, 8)
        model(x)
    return model.eval()


@pytest.mark.parametrize(
    ("weight_bits", "activation_bits", "signed", "weights", "activations"),
    [
        (8, 8, False, "int8", "uint8"),
        (8, 8, True, "int8", "int8"),
        (4, 6, True, "int8", "int8"),
        (1, 8, True, "int8", "int8"),
        (16, 16, True, "int16", "int16"),
    ],
)
def test_integer_form_computes_the_trained_values_in_pytorch_and_onnxruntime(
    tmp_path: Path, weight_bits: int, activation_bits: int, signed: bool, weights, activations
) -> None:
    model = _trained(weight_bits, activation_bits, signed=signed)
    deployed, layers = integer_form(model, fp16=False)
    assert [la.weights for la in layers] == [weights] * 3
    assert layers[0].activations == activations  # the others follow batch norms: signed
    x = torch.randn(8, 3, 8, 8) * 3  # beyond the calibrated range: the clamps matter
    with torch.no_grad():
        expected = model(x)
        np.testing.assert_allclose(deployed(x), expected, rtol=1e-5, atol=1e-5)

    proto = _onnx(deployed, x[:2], 21 if weight_bits > 8 else 20)
    assert fold_batch_norms(proto) == 2
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "BatchNormalization" not in ops
    integer = onnx.TensorProto.INT8 if weight_bits <= 8 else onnx.TensorProto.INT16
    weights_stored = [t.data_type for t in proto.graph.initializer if len(t.dims) >= 2]
    assert weights_stored == [integer] * 3  # no float copy of a weight is left
    path = tmp_path / "model.onnx"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(path))
    # As written, the graph computes the trained values to float rounding; where a value sits on
    # a rounding boundary, another summation order (or onnxruntime's integer kernels, which
    # requantize their accumulators) may move it one level: most logits agree to 1e-5, all to
    # 3e-2 (a few levels' worth at these steps). On an x86 CPU without VNNI, onnxruntime's
    # 8-bit kernels sum pairs of uint8 x int8 products in int16, which saturates (measured on
    # an AVX2-only AMD EPYC: logits off by up to 0.054, median 0.018); the graph as written
    # stays exact there.
    literal = onnxruntime.SessionOptions()
    literal.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    saturates = weight_bits <= 8 and _x86_without_vnni()
    for options in (literal, onnxruntime.SessionOptions()):
        session = onnxruntime.InferenceSession(str(path), options)
        atol, median = (1e-1, 5e-2) if saturates and options is not literal else (3e-2, 1e-5)
        for batch in (1, 8):
            (got,) = session.run(None, {"input": x[:batch].numpy()})
            with torch.no_grad():
                reference = model(x[:batch]).numpy()
            np.testing.assert_allclose(got, reference, atol=atol)
            assert np.median(np.abs(got - reference)) < median


def _x86_without_vnni() -> bool:
    """Whether this is an x86 CPU whose flags list no VNNI (``/proc/cpuinfo``)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx2" in flags and "vnni" not in flags and "amx" not in flags


def test_sixteen_bits_become_fp16_where_the_target_has_it() -> None:
    model = _trained(16, 16, signed=True)
    deployed, layers = integer_form(model, fp16=True)
    assert {(la.weights, la.activations) for la in layers} == {("fp16", "fp16")}
    x = torch.randn(4, 3, 8, 8) * 3  # beyond the calibrated range: the clip matters
    first = model[0]
    clip = first.act_step.item() * (2**15 - 1)
    assert (x.abs() > clip).float().mean() > 0.05
    with torch.no_grad():
        # fp16 keeps 11 significant bits: within 1e-2 of the 16-bit grid's values here, because
        # the input is clipped to the trained range first (unclipped: up to 0.13 off here)
        np.testing.assert_allclose(deployed(x), model(x), rtol=1e-2, atol=1e-2)


def test_float_layers_and_the_original_model_are_left_alone() -> None:
    model = _trained(32, 32, signed=False)
    deployed, layers = integer_form(model, fp16=False)
    assert layers == [] and isinstance(deployed[0], QuantConv2d)
    quantized = _trained(8, 8, signed=False)
    integer_form(quantized, fp16=False)
    assert isinstance(quantized[0], QuantConv2d)  # a copy was converted
