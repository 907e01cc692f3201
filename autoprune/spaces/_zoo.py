"""Model zoo: a name-keyed registry of base models (timm style).

The registry key is the same string in Python, YAML and on the command line. Every factory builds
without network access (torchvision models are created with ``weights=None``) and takes
``num_classes`` and ``in_channels``; an ``in_channels`` other than 3 replaces the first convolution
by one with the same hyper-parameters.

Besides the factory, each entry knows two things the surgery needs:

* how to re-initialise the model from scratch (the scheme of the model's own ``__init__``), and
* its *stages* for depth search: runs of blocks where every block after the first keeps the shape
  and adds a residual connection, so it can be replaced by ``nn.Identity``.

Example:
    >>> from autoprune.spaces import create_model, list_models
    >>> "resnet20" in list_models()
    True
    >>> model = create_model("resnet20", num_classes=10, in_channels=1)
    >>> sum(p.numel() for p in model.parameters())
    272186
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual

from autoprune.errors import ConfigError, UnknownNameError

__all__ = [
    "CifarBasicBlock",
    "CifarResNet",
    "Stage",
    "create_model",
    "init_weights",
    "list_models",
    "model_stages",
    "register_model",
]

_logger = logging.getLogger("autoprune.spaces")

ModelFactory = Callable[..., nn.Module]
InitFn = Callable[[nn.Module], None]
StagesFn = Callable[[nn.Module], "tuple[Stage, ...]"]


@dataclass(frozen=True)
class Stage:
    """A run of blocks whose later blocks can be dropped (depth search).

    ``blocks`` are module names in execution order. ``blocks[0]`` changes the shape (stride or
    channel count) and is always kept; ``blocks[1:]`` preserve the shape and are residual, so
    keeping the first ``k`` blocks and replacing the rest by ``nn.Identity`` is valid.

    Example:
        >>> Stage(name="layer1", blocks=("layer1.0", "layer1.1", "layer1.2")).num_blocks
        3
    """

    name: str
    blocks: tuple[str, ...]

    @property
    def num_blocks(self) -> int:
        """Number of blocks in the base model's stage."""
        return len(self.blocks)


@dataclass(frozen=True)
class _Entry:
    factory: ModelFactory
    init: InitFn
    stages: StagesFn


_REGISTRY: dict[str, _Entry] = {}


def _default_init(model: nn.Module) -> None:
    """He et al. 2015 init used by torchvision ResNets: kaiming-normal fan-out for convolutions,
    BN weight 1 and bias 0, PyTorch's default for ``nn.Linear``."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            m.reset_parameters()


def _small_linear_init(model: nn.Module) -> None:
    """torchvision's VGG and MobileNetV2 scheme: as :func:`_default_init` but ``nn.Linear``
    weights drawn from N(0, 0.01) with zero bias."""
    _default_init(model)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def _no_stages(model: nn.Module) -> tuple[Stage, ...]:
    return ()


def _sequential_stages(*names: str) -> StagesFn:
    """Stages that are ``nn.Sequential`` attributes of the model (ResNet ``layer1``...)."""

    def stages(model: nn.Module) -> tuple[Stage, ...]:
        out = []
        for name in names:
            seq = model.get_submodule(name)
            out.append(Stage(name=name, blocks=tuple(f"{name}.{i}" for i in range(len(seq)))))
        return tuple(out)

    return stages


def _mobilenet_v2_stages(model: nn.Module) -> tuple[Stage, ...]:
    """Runs of two or more ``InvertedResidual`` blocks in ``features`` where every block after the
    first uses the residual connection; named ``features.<first>-<last>`` (inclusive), e.g.
    ``features.4-6`` for the three 32-channel blocks."""
    features = model.get_submodule("features")
    runs: list[list[int]] = []
    for i, block in enumerate(features):
        if not isinstance(block, InvertedResidual):
            continue
        if block.use_res_connect and runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return tuple(
        Stage(name=f"features.{run[0]}-{run[-1]}", blocks=tuple(f"features.{i}" for i in run))
        for run in runs
        if len(run) > 1  # a lone block has nothing to drop
    )


def register_model(
    name: str,
    *,
    init: InitFn | None = None,
    stages: StagesFn | None = None,
) -> Callable[[ModelFactory], ModelFactory]:
    """Register a model factory under ``name`` (a decorator, as in timm).

    The factory must accept keyword-only ``num_classes`` and ``in_channels`` and build without
    network access. ``init`` re-initialises a (possibly pruned) model in place with the model's own
    scheme (default: kaiming-normal fan-out convs, BN 1/0, default ``nn.Linear``); ``stages``
    lists the model's droppable-block stages (default: none).

    Example:
        >>> from torch import nn
        >>> @register_model("tiny_cnn_doc")
        ... def tiny_cnn(*, num_classes: int, in_channels: int) -> nn.Module:
        ...     return nn.Sequential(
        ...         nn.Conv2d(in_channels, 32, 3), nn.BatchNorm2d(32), nn.ReLU(),
        ...         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))
        >>> "tiny_cnn_doc" in list_models()
        True
    """

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = _Entry(
            factory=factory, init=init or _default_init, stages=stages or _no_stages
        )
        return factory

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted.

    Example:
        >>> list_models()[:3]
        ['mobilenet_v2', 'resnet18', 'resnet20']
    """
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("model", name, list_models()) from None


def create_model(name: str, *, num_classes: int, in_channels: int) -> nn.Module:
    """Build the registered base model ``name`` with fresh (random) weights.

    Args:
        name: registry key, e.g. ``"resnet56"``.
        num_classes: classifier outputs (>= 1).
        in_channels: input image channels (>= 1), e.g. 1 for Fashion-MNIST.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the valid names).
        ConfigError: ``num_classes`` or ``in_channels`` is not a positive integer.

    Example:
        >>> m = create_model("resnet18", num_classes=10, in_channels=1)
        >>> m.conv1.in_channels, m.fc.out_features
        (1, 10)
    """
    entry = _entry(name)
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"`{key}` must be a positive integer, but got {value!r}; fix it")
    return entry.factory(num_classes=num_classes, in_channels=in_channels)


def init_weights(model: nn.Module, name: str) -> None:
    """Re-initialise every parameter and BN statistic of ``model`` in place with the scheme of the
    registered model ``name`` (fresh init: candidates train from scratch).

    Example:
        >>> m = create_model("resnet20", num_classes=10, in_channels=3)
        >>> init_weights(m, "resnet20")
        >>> float(m.bn1.weight.detach().mean())
        1.0
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase):
            m.reset_running_stats()
    _entry(name).init(model)


def model_stages(model: nn.Module, name: str) -> tuple[Stage, ...]:
    """The depth-search stages of ``model`` (built by the registered model ``name``).

    Example:
        >>> m = create_model("resnet20", num_classes=10, in_channels=3)
        >>> [(s.name, s.num_blocks) for s in model_stages(m, "resnet20")]
        [('layer1', 3), ('layer2', 3), ('layer3', 3)]
    """
    return _entry(name).stages(model)


def _replace_first_conv(parent: nn.Module, attr: str, in_channels: int) -> None:
    old = getattr(parent, attr)
    assert isinstance(old, nn.Conv2d)
    if old.in_channels == in_channels:
        return
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,  # type: ignore[arg-type]
        stride=old.stride,  # type: ignore[arg-type]
        padding=old.padding,  # type: ignore[arg-type]
        dilation=old.dilation,  # type: ignore[arg-type]
        groups=old.groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    # All zoo models initialise convolutions this way (torchvision ResNet, VGG, MobileNetV2).
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    setattr(parent, attr, new)


# --------------------------------------------------------------------------------------------
# CIFAR-style ResNets (He et al. 2016, Sec. 4.2), as used by Liu et al. 2019 ("Rethinking the
# Value of Network Pruning"): 3x3 conv 16 -> 3 stages of n BasicBlocks with 16/32/64 channels,
# stride 2 at stages 2 and 3 -> global average pool -> fc; depth 6n + 2.
# --------------------------------------------------------------------------------------------


class CifarBasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual add and a ReLU after the add.

    The shortcut is *option B* of He et al. 2016: a 1x1 conv + BN projection when the shape
    changes, identity otherwise. (Option A, zero-padding, is not a module and Torch-Pruning's
    dependency graph could not keep it consistent under width surgery.)

    Example:
        >>> import torch
        >>> CifarBasicBlock(16, 32, stride=2)(torch.randn(1, 16, 8, 8)).shape
        torch.Size([1, 32, 4, 4])
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2) with stages ``layer1``, ``layer2``, ``layer3`` (``nn.Sequential``).

    Example:
        >>> import torch
        >>> CifarResNet(3, num_classes=10, in_channels=1)(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, n: int, *, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(16, 16, n, stride=1)
        self.layer2 = self._stage(16, 32, n, stride=2)
        self.layer3 = self._stage(32, 64, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        _default_init(self)

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, *, stride: int) -> nn.Sequential:
        blocks = [CifarBasicBlock(in_planes, planes, stride=stride)]
        blocks += [CifarBasicBlock(planes, planes) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


_RESNET_STAGES3 = _sequential_stages("layer1", "layer2", "layer3")
_RESNET_STAGES4 = _sequential_stages("layer1", "layer2", "layer3", "layer4")


@register_model("resnet20", stages=_RESNET_STAGES3)
def resnet20(*, num_classes: int, in_channels: int) -> nn.Module:
    """CIFAR ResNet-20 (n=3 blocks per stage, 0.27 M parameters at 10 classes)."""
    return CifarResNet(3, num_classes=num_classes, in_channels=in_channels)


@register_model("resnet56", stages=_RESNET_STAGES3)
def resnet56(*, num_classes: int, in_channels: int) -> nn.Module:
    """CIFAR ResNet-56 (n=9 blocks per stage, 0.86 M parameters at 10 classes)."""
    return CifarResNet(9, num_classes=num_classes, in_channels=in_channels)


@register_model("resnet18", stages=_RESNET_STAGES4)
def resnet18(*, num_classes: int, in_channels: int) -> nn.Module:
    """torchvision ResNet-18 (1.81 GMACs, 11.7 M parameters at 3x224x224, 1000 classes)."""
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    _replace_first_conv(model, "conv1", in_channels)
    return model


@register_model("resnet50", stages=_RESNET_STAGES4)
def resnet50(*, num_classes: int, in_channels: int) -> nn.Module:
    """torchvision ResNet-50 (4.09 GMACs, 25.6 M parameters at 3x224x224, 1000 classes)."""
    model = torchvision.models.resnet50(weights=None, num_classes=num_classes)
    _replace_first_conv(model, "conv1", in_channels)
    return model


@register_model("mobilenet_v2", init=_small_linear_init, stages=_mobilenet_v2_stages)
def mobilenet_v2(*, num_classes: int, in_channels: int) -> nn.Module:
    """torchvision MobileNetV2 (0.30 GMACs, 3.5 M parameters at 3x224x224, 1000 classes)."""
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes)
    _replace_first_conv(model.features[0], "0", in_channels)
    return model


@register_model("vgg16_bn", init=_small_linear_init)
def vgg16_bn(*, num_classes: int, in_channels: int) -> nn.Module:
    """torchvision VGG-16 with BN (15.5 GMACs, 138 M parameters at 3x224x224, 1000 classes).

    It has no residual blocks, so it has no depth decisions."""
    model = torchvision.models.vgg16_bn(weights=None, num_classes=num_classes)
    _replace_first_conv(model.features, "0", in_channels)
    return model
