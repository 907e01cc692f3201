"""Where a base model comes from: one name, in Python, YAML and on the command line.

``create_model(name, num_classes=..., in_channels=...)`` accepts

* a name registered with :func:`~autoprune.spaces.register_model` (``resnet20``, ...),
* any torchvision classification model (``torchvision.models.list_models(module=
  torchvision.models)``: ``resnet34``, ``efficientnet_b0``, ``convnext_tiny``, ...), built with
  ``weights=None``,
* ``timm:NAME``: a timm model, built with ``pretrained=False`` (no network),
* ``path/to/file.py:factory`` or ``package.module:factory``: the user's own factory, called as
  ``factory(num_classes=..., in_channels=...)`` and returning an ``nn.Module``.

Registered models know how to re-initialise a pruned copy (their ``init``). Every other source
is initialised by its own ``__init__``: :func:`~autoprune.spaces.build_model` builds it on the CPU
under the candidate's seed and then cuts it down, so parameters and buffers a generic scheme
would not know (position embeddings, layer scales, relative-position tables) keep the model's
own values.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib
import importlib.util
import inspect
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from autoprune.errors import ConfigError, UnknownNameError
from autoprune.spaces._zoo import (
    InitFn,
    ModelFactory,
    registered,
    registered_names,
    replace_first_conv,
    torchvision_models,
)

__all__ = ["ModelSource", "create_model", "list_models", "model_source", "python_model"]

_logger = logging.getLogger("autoprune.spaces")

TIMM_PREFIX = "timm:"
PYTHON_PREFIX = "python:"

# Models handed over as Python objects in this process (the Python API): name -> factory.
_PYTHON_MODELS: dict[str, ModelFactory] = {}

# Constructor arguments for torchvision models whose defaults do not suit a plain classifier:
# auxiliary heads return a tuple in training mode; the explicit init silences torchvision's warning.
_TORCHVISION_KWARGS: dict[str, dict[str, object]] = {
    "googlenet": {"aux_logits": False, "init_weights": True, "transform_input": False},
    "inception_v3": {"aux_logits": False, "init_weights": True, "transform_input": False},
}


@dataclass(frozen=True)
class ModelSource:
    """A resolved model name.

    Attributes:
        name: the name as given.
        kind: ``"registered"``, ``"torchvision"``, ``"timm"`` or ``"factory"``.
        factory: ``(num_classes=, in_channels=) -> nn.Module``.
        init: re-initialises a pruned copy in place with the model's scheme; ``None`` when the
            model's own ``__init__`` is what initialises it (see the module docstring).
    """

    name: str
    kind: str
    factory: ModelFactory
    init: InitFn | None


@functools.cache
def torchvision_names() -> tuple[str, ...]:
    """Every torchvision classification model name, sorted."""
    models = torchvision_models()
    return tuple(sorted(models.list_models(module=models)))


def list_models() -> list[str]:
    """Registered and torchvision model names, sorted (``timm:NAME`` and factories besides).

    Example:
        >>> names = list_models()
        >>> "resnet20" in names and "efficientnet_b0" in names
        True
    """
    return sorted({*registered_names(), *torchvision_names()})


def _torchvision(name: str) -> ModelFactory:
    def factory(*, num_classes: int, in_channels: int) -> nn.Module:
        kwargs = _TORCHVISION_KWARGS.get(name, {})
        models = torchvision_models()
        model = models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        return replace_first_conv(model, in_channels)

    return factory


def _timm(name: str) -> ModelFactory:
    import timm  # noqa: PLC0415 - imported when a timm model is asked for

    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:8]
        raise ConfigError(
            f"timm has no model {name!r}"
            + (f"; close names: {', '.join(close)}" if close else "")
            + "; list them with timm.list_models()"
        )

    def factory(*, num_classes: int, in_channels: int) -> nn.Module:
        return timm.create_model(
            name, pretrained=False, num_classes=num_classes, in_chans=in_channels
        )

    return factory


def _import_module(spec: str) -> object:
    if spec.endswith(".py") or "/" in spec or "\\" in spec:
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"model file {spec!r} does not exist; give path/to/file.py:factory")
        module_name = "autoprune_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        if module_name in sys.modules:
            return sys.modules[module_name]
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        assert loader_spec is not None and loader_spec.loader is not None
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise ConfigError(
                f"model file {spec!r} failed to import ({type(exc).__name__}: {exc}); fix it"
            ) from exc
        return module
    try:
        return importlib.import_module(spec)
    except (ImportError, ValueError, TypeError) as exc:  # "", ".rel": ValueError, TypeError
        raise ConfigError(
            f"cannot import module {spec!r} for the model ({exc}); check the name and that it "
            f"is importable (on sys.path / installed)"
        ) from exc


def _factory(name: str) -> ModelFactory:
    module_spec, _, attr = name.rpartition(":")
    module = _import_module(module_spec)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{module_spec!r} has no callable {attr!r}; give FILE_OR_MODULE:factory")
    try:
        inspect.signature(fn).bind(num_classes=2, in_channels=3)
    except (TypeError, ValueError):
        raise ConfigError(
            f"model factory {name!r} must accept num_classes and in_channels (keyword "
            f"arguments), e.g. def {attr}(*, num_classes, in_channels) -> nn.Module"
        ) from None

    def factory(*, num_classes: int, in_channels: int) -> nn.Module:
        model = fn(num_classes=num_classes, in_channels=in_channels)
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"model factory {name!r} returned {type(model).__name__}, not an nn.Module"
            )
        return model

    return factory


@functools.lru_cache(maxsize=256)
def model_source(name: str) -> ModelSource:
    """Resolve a model name (see the module docstring).

    Raises:
        UnknownNameError: a plain name that is neither registered nor torchvision's.
        ConfigError: a ``timm:`` name timm lacks, or a factory that cannot be imported or
            called as documented.

    Example:
        >>> model_source("efficientnet_b0").kind, model_source("resnet20").kind
        ('torchvision', 'registered')
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ConfigError(f"`model.name` must be a model name, but got {name!r}")
    if name in _PYTHON_MODELS:
        return ModelSource(name, "python", _PYTHON_MODELS[name], None)
    if name.startswith(PYTHON_PREFIX):
        raise ConfigError(
            f"model {name!r} was a Python object of another process; pass the object again "
            f"(autoprune.search(model=...)) to continue this run"
        )
    entry = registered(name)
    if entry is not None:
        return ModelSource(name, "registered", entry.factory, entry.init)
    if name.startswith(TIMM_PREFIX):
        return ModelSource(name, "timm", _timm(name[len(TIMM_PREFIX) :]), None)
    if ":" in name:
        return ModelSource(name, "factory", _factory(name), None)
    if name in torchvision_names():
        return ModelSource(name, "torchvision", _torchvision(name), None)
    raise UnknownNameError(
        "model",
        name,
        [*list_models(), "timm:NAME", "path/to/file.py:factory", "package.module:factory"],
    )


@contextlib.contextmanager
def _tensors_to_meta() -> Iterator[None]:
    """Register every new parameter and buffer on the ``meta`` device while constructors run
    their own tensor arithmetic on the CPU (for models ``torch.device("meta")`` cannot build)."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, param)

    def buffer(
        self: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True
    ) -> None:
        register_buffer(self, name, None if tensor is None else tensor.to("meta"), persistent)

    nn.Module.register_parameter = parameter  # type: ignore[method-assign]
    nn.Module.register_buffer = buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]


def _checked(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"`{key}` must be a positive integer, but got {value!r}; fix it")
    return value


def create_model(
    name: str, *, num_classes: int, in_channels: int, device: str | torch.device = "cpu"
) -> nn.Module:
    """Build the base model ``name`` with fresh weights (the model's own initialisation).

    ``device="meta"`` gives shapes without values, at no cost (models whose constructors do
    tensor arithmetic are built with their parameters and buffers moved to ``meta`` as they are
    registered). An ambient ``torch.device("meta")`` context also builds on ``meta``.

    Raises:
        UnknownNameError: an unknown plain name (the message lists the valid ones).
        ConfigError: a bad count, or a factory that fails as documented in :func:`model_source`.

    Example:
        >>> m = create_model("resnet18", num_classes=10, in_channels=1)
        >>> m.conv1.in_channels, m.fc.out_features
        (1, 10)
    """
    source = model_source(name)
    kwargs = {
        "num_classes": _checked(num_classes, "num_classes"),
        "in_channels": _checked(in_channels, "in_channels"),
    }
    if torch.device(device).type != "meta" and torch.empty(0).device.type != "meta":
        return source.factory(**kwargs)
    try:
        with torch.device("meta"):
            return source.factory(**kwargs)
    except (NotImplementedError, RuntimeError):
        pass  # the constructor computes with tensors: keep that arithmetic on the CPU
    with torch.device("cpu"), _tensors_to_meta():
        return source.factory(**kwargs)


def _fresh_copy(module: nn.Module) -> ModelFactory:
    """A factory that deep-copies ``module`` and re-initialises every submodule that can
    (``reset_parameters``, batch-norm statistics) under the caller's RNG."""
    template = copy.deepcopy(module).cpu()

    def factory(*, num_classes: int, in_channels: int) -> nn.Module:
        model = copy.deepcopy(template)
        for sub in model.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
            if isinstance(sub, nn.modules.batchnorm._NormBase):
                sub.reset_running_stats()
        return model

    return factory


def python_model(model: nn.Module | ModelFactory) -> str:
    """Register an ``nn.Module`` object or a factory for this process; returns its name.

    A module is copied (its weights are not used: candidates train from scratch; give trained
    weights as ``model.weights``); a factory is called as ``factory(num_classes=...,
    in_channels=...)``. The name, ``python:<class or function name>``, is the same for the
    same architecture (a short hash of it follows the name), so a run continues with the
    object passed again, and a changed architecture is a different model.

    Example:
        >>> from torch import nn
        >>> python_model(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten()))
        'python:Sequential-...'
    """
    if isinstance(model, nn.Module):
        label, factory = type(model).__name__, _fresh_copy(model)
        identity = repr(model)  # the architecture, whatever the weights
    elif callable(model):
        label, factory = getattr(model, "__name__", type(model).__name__), model
        code = getattr(model, "__code__", None)
        identity = f"{getattr(model, '__qualname__', label)}:{code.co_code.hex() if code else ''}"
    else:
        raise ConfigError(
            f"`model` must be a name, an nn.Module or a factory, but got {type(model).__name__}"
        )
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    name = f"{PYTHON_PREFIX}{label}-{digest}"
    _PYTHON_MODELS[name] = factory
    model_source.cache_clear()
    return name
