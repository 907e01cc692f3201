"""Search spaces, model zoo, surgery, fake quantization and exact cost counting.

The first stage of the data flow: a :class:`SearchSpace` over a registered base model turns a
controller's ``params`` into a :class:`Candidate`; :func:`build_model` turns the
candidate into a compact, freshly initialised ``nn.Module`` (width/depth surgery with
Torch-Pruning, fake quantization for bit-widths below 32), and :func:`inherit_weights` cuts the
same network out of a trained base model instead (channels ranked by L1 norm, for fine-tuning);
:func:`count_costs` gives its exact MACs ("FLOPs" in this project), parameters and bytes at the
deploy input shape.

Example:
    >>> from autoprune.spaces import SearchSpace, build_model, count_costs
    >>> space = SearchSpace(model="resnet20", num_classes=10, in_channels=1,
    ...                     input_shape=(1, 28, 28), width_ratios=(0.5, 1.0), depth=True,
    ...                     resolution_scales=(1.0,), weight_bits=(8, 32),
    ...                     activation_bits=(8, 32), channel_multiple=8)
    >>> small = space.smallest()
    >>> report = count_costs(build_model(small, seed=0), small.input_shape)
    >>> report.macs < count_costs(build_model(space.largest(), seed=0), (1, 28, 28)).macs
    True
"""

from __future__ import annotations

from autoprune.spaces._blocks import Stage, find_stages
from autoprune.spaces._candidate import Candidate
from autoprune.spaces._costs import CostReport, LayerCost, count_costs
from autoprune.spaces._inherit import DATA_IMPORTANCES, IMPORTANCES, inherit_weights
from autoprune.spaces._quant import QuantConv2d, QuantLinear
from autoprune.spaces._soft import SoftPruning
from autoprune.spaces._sources import (
    ModelSource,
    create_model,
    list_models,
    model_source,
    python_model,
)
from autoprune.spaces._space import Decision, SearchSpace
from autoprune.spaces._surgery import build_model, cost_report
from autoprune.spaces._zoo import register_model

__all__ = [
    "DATA_IMPORTANCES",
    "IMPORTANCES",
    "Candidate",
    "CostReport",
    "Decision",
    "LayerCost",
    "ModelSource",
    "QuantConv2d",
    "QuantLinear",
    "SearchSpace",
    "SoftPruning",
    "Stage",
    "build_model",
    "cost_report",
    "count_costs",
    "create_model",
    "find_stages",
    "inherit_weights",
    "list_models",
    "model_source",
    "python_model",
    "register_model",
]
