"""The export formats, one registry: each writes a trained trial's network into a folder.

A writer takes an :class:`ExportJob` (the trained network, its input shape, the target) and a
folder, writes its files there and returns what each file is (:class:`WrittenFile`), with notes
a deployer must read. A writer that cannot produce its format raises; :func:`export_run` then
skips that (trial, format) pair and reports why in one line.

Batch: ONNX and ``.pt2`` take any batch size (a symbolic first dimension); TorchScript is traced
at batch 1 and runs other batch sizes; a TVM library is built for batch 1.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch
from onnxscript import ir
from onnxscript.optimizer import optimize_ir
from torch import nn

from autoprune._interrupts import interrupts_deferred
from autoprune.export._integer import LayerPrecision, fold_batch_norms, integer_form, is_quantized
from autoprune.hwprofiles import DeviceProfile, build_for_target, import_to_relax, write_library

__all__ = [
    "EXPORT_FORMATS",
    "ExportFormat",
    "ExportJob",
    "WrittenFile",
    "register_format",
]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_ONNX_OPSET = 20  # QuantizeLinear/DequantizeLinear at int8/uint8; 21 adds int16 (used when needed)
_INT16_OPSET = 21


@dataclass(frozen=True)
class WrittenFile:
    """One exported file: its name in the trial folder, format, form and batch sizes."""

    name: str
    format: str
    form: str  # "float", "qdq" (integer weights, quantize/dequantize pairs), "fake-quantized"
    batch: str  # "dynamic" or "1"

    def to_dict(self) -> dict[str, str]:
        return {"file": self.name, "format": self.format, "form": self.form, "batch": self.batch}


@dataclass
class ExportJob:
    """What a writer needs about one trial.

    ``model`` is the trained network in evaluation mode on the CPU (its quantized layers
    fake-quantized, as trained), with the input normalisation in front of it when folded;
    ``input_shape`` is ``(C, H, W)``; ``profile`` is the device the TVM library is built for and
    whose native precisions map 16-bit layers (fp16 where native). Writers append the per-layer
    storage of an integer export to ``layers`` and deployer notes to ``notes``.
    """

    model: nn.Module
    input_shape: tuple[int, int, int]
    profile: DeviceProfile
    layers: list[LayerPrecision] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def quantized(self) -> bool:
        return is_quantized(self.model)

    def example(self, batch: int = 1) -> torch.Tensor:
        return torch.randn(batch, *self.input_shape)


@dataclass(frozen=True)
class ExportFormat:
    """A registered format: ``name`` as ``--format`` takes it, and its writer."""

    name: str
    description: str
    write: Callable[[ExportJob, Path], list[WrittenFile]]


EXPORT_FORMATS: dict[str, ExportFormat] = {}


def register_format(
    name: str, description: str
) -> Callable[[Callable[[ExportJob, Path], list[WrittenFile]]], Any]:
    """Register ``write(job, folder) -> [WrittenFile, ...]`` as export format ``name``."""

    def decorate(write: Callable[[ExportJob, Path], list[WrittenFile]]) -> Any:
        EXPORT_FORMATS[name] = ExportFormat(name, description, write)
        return write

    return decorate


def _batch_dim() -> dict[int, Any]:
    return {0: torch.export.Dim("batch", min=1, max=4096)}


def _onnx(model: nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    with (
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
        interrupts_deferred(),  # Ctrl-C inside torch.export's C++ callbacks can abort
    ):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            None,
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=(_batch_dim(),),
            opset_version=opset,
            optimize=False,
            verbose=False,
        )
        optimize_ir(program.model, should_fold=_keeps_stored_precision)
    return program.model_proto


_STORED = (ir.DataType.FLOAT16, ir.DataType.INT8, ir.DataType.UINT8, ir.DataType.INT16)


def _keeps_stored_precision(node: ir.Node) -> bool | None:
    """Constant folding must not turn weights stored in fp16 or integers back into float32
    (it would fold their ``Cast``/``DequantizeLinear``); ``None``: the default rules."""
    source = node.inputs[0] if node.inputs else None
    if node.op_type in ("Cast", "DequantizeLinear") and source is not None:
        if source.const_value is not None and source.dtype in _STORED:
            return False
    return None


def _save_onnx(proto: onnx.ModelProto, path: Path) -> None:
    """Check and write ``proto`` without the exporter's metadata (PyTorch stack traces, module
    paths, intermediate shapes: more bytes than a small network's weights, and nothing a runtime
    needs; runtimes infer the shapes)."""
    for node in proto.graph.node:
        del node.metadata_props[:]
    del proto.graph.metadata_props[:]
    del proto.graph.value_info[:]
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(path))


@register_format("onnx", "ONNX with a dynamic batch; quantized trials as integer QDQ models")
def write_onnx(job: ExportJob, folder: Path) -> list[WrittenFile]:
    """``model.onnx``; for a quantized trial the integer (QDQ) model, plus ``model.float.onnx``
    computing the fake-quantized graph in float, as trained."""
    example = job.example(2)
    if not job.quantized:
        _save_onnx(_onnx(job.model, example, _ONNX_OPSET), folder / "model.onnx")
        return [WrittenFile("model.onnx", "onnx", "float", "dynamic")]
    fp16 = "fp16" in job.profile.native_precisions
    deployed, layers = integer_form(job.model, fp16=fp16)
    int16 = any({layer.weights, layer.activations} & {"int16", "uint16"} for layer in layers)
    proto = _onnx(deployed, example, _INT16_OPSET if int16 else _ONNX_OPSET)
    fold_batch_norms(proto)
    _save_onnx(proto, folder / "model.onnx")
    _save_onnx(_onnx(job.model, example, _ONNX_OPSET), folder / "model.float.onnx")
    job.layers[:] = layers
    return [
        WrittenFile("model.onnx", "onnx", "qdq", "dynamic"),
        WrittenFile("model.float.onnx", "onnx", "fake-quantized", "dynamic"),
    ]


@register_format("torchscript", "TorchScript, traced (for runtimes without torch.export)")
def write_torchscript(job: ExportJob, folder: Path) -> list[WrittenFile]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        traced = torch.jit.trace(job.model, job.example(1))
        traced.save(str(folder / "model.torchscript.pt"))
    form = "fake-quantized" if job.quantized else "float"
    return [WrittenFile("model.torchscript.pt", "torchscript", form, "dynamic")]


@register_format("pt2", "torch.export's ExportedProgram (torch.export.load), dynamic batch")
def write_pt2(job: ExportJob, folder: Path) -> list[WrittenFile]:
    with warnings.catch_warnings(), interrupts_deferred():
        warnings.simplefilter("ignore")
        program = torch.export.export(job.model, (job.example(2),), dynamic_shapes=(_batch_dim(),))
    torch.export.save(program, str(folder / "model.pt2"))
    form = "fake-quantized" if job.quantized else "float"
    return [WrittenFile("model.pt2", "pt2", form, "dynamic")]


@register_format("tvm", "a TVM library for the target (batch 1)")
def write_tvm(job: ExportJob, folder: Path) -> list[WrittenFile]:
    spec = job.profile.tvm_target_spec()
    executable = build_for_target(import_to_relax(job.model, job.input_shape), spec)
    library = write_library(executable, spec, folder)
    form = "float"
    if job.quantized:
        form = "fake-quantized"
        job.notes.append(
            f"{library.name} computes the quantized layers' values in float kernels: TVM 0.27's "
            "PyTorch importer has no quantize/dequantize ops, so it has no integer kernels; "
            "model.onnx is the integer model"
        )
    return [WrittenFile(library.name, "tvm", form, "1")]
