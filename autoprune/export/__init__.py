"""Export trained candidates of a run for deployment.

Per exported trial, ``OUT/trial-NNNN/`` holds::

    candidate.yaml        the architecture (rebuild with autoprune.spaces.build_model)
    model.pt              the trained state_dict
    model.onnx            ONNX with a dynamic batch; a quantized trial's is the integer model
                          (int8 weights, QuantizeLinear/DequantizeLinear pairs: the QDQ form that
                          onnxruntime and TensorRT run with integer kernels)
    model.float.onnx      a quantized trial only: its fake-quantized graph in float, as trained
    model.torchscript.pt  TorchScript (traced)
    model.pt2             torch.export's ExportedProgram (``torch.export.load``)
    model.so | model.tar  TVM library for the target (``--format tvm``; batch 1)
    model.json            what a runtime needs: input and output tensors, normalisation, class
                          names, per-layer precision, accuracy, costs, files
    card.md               the same for people
    retrain.json          with ``retrain``: how the weights were retrained, and their accuracies

A trial's folder is written beside it under a temporary name and renamed when complete, so it
is complete or absent. A (trial, format) pair that cannot be produced is skipped, with the
reason, and the rest are written.

Example:
    >>> from pathlib import Path
    >>> result = export_run(Path("runs/demo"), pareto=True, formats=["onnx"])  # a finished run
    >>> from autoprune.search import RunDir, pareto_front
    >>> [e.trial for e in result] == [r.number for r in pareto_front(RunDir("runs/demo").records())]
    True
    >>> sorted(p.name for p in result[0].folder.iterdir())
    ['candidate.yaml', 'card.md', 'model.json', 'model.onnx', 'model.pt']
"""

from autoprune.export._formats import EXPORT_FORMATS, ExportFormat, ExportJob, register_format
from autoprune.export._integer import LayerPrecision, fold_batch_norms, integer_form
from autoprune.export._run import DEFAULT_FORMATS, ExportedModel, Skipped, export_run

__all__ = [
    "DEFAULT_FORMATS",
    "EXPORT_FORMATS",
    "ExportFormat",
    "ExportJob",
    "ExportedModel",
    "LayerPrecision",
    "Skipped",
    "export_run",
    "fold_batch_norms",
    "integer_form",
    "register_format",
]
