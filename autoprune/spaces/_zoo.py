"""The registry of built-in base models (timm style), and the CIFAR ResNets of the zoo.

A registered model is a factory taking keyword-only ``num_classes`` and ``in_channels`` that
builds without network access, plus the scheme that re-initialises a pruned copy of it. Names
resolve through :func:`~autoprune.spaces.create_model`, which also knows torchvision, timm and
the user's own factories; depth stages are read from the model's graph (``_blocks.py``).

Example:
    >>> from autoprune.spaces import create_model
    >>> model = create_model("resnet20", num_classes=10, in_channels=1)
    >>> sum(p.numel() for p in model.parameters())
    272186
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

from autoprune.errors import ConfigError

__all__ = [
    "CifarBasicBlock",
    "CifarResNet",
    "InitFn",
    "ModelFactory",
    "register_model",
    "registered",
    "registered_names",
    "replace_first_conv",
]

_logger = logging.getLogger("autoprune.spaces")

ModelFactory = Callable[..., nn.Module]
InitFn = Callable[[nn.Module], None]


@dataclass(frozen=True)
class _Entry:
    factory: ModelFactory
    init: InitFn


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


def register_model(
    name: str, *, init: InitFn | None = None
) -> Callable[[ModelFactory], ModelFactory]:
    """Register a model factory under ``name`` (a decorator, as in timm).

    The factory must accept keyword-only ``num_classes`` and ``in_channels`` and build without
    network access. ``init`` re-initialises a (possibly pruned) model in place with the model's own
    scheme (default: kaiming-normal fan-out convs, BN 1/0, default ``nn.Linear``). Depth stages
    are found from the model's graph.

    Example:
        >>> from torch import nn
        >>> @register_model("tiny_cnn_doc")
        ... def tiny_cnn(*, num_classes: int, in_channels: int) -> nn.Module:
        ...     return nn.Sequential(
        ...         nn.Conv2d(in_channels, 32, 3), nn.BatchNorm2d(32), nn.ReLU(),
        ...         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))
        >>> "tiny_cnn_doc" in registered_names()
        True
    """

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = _Entry(factory=factory, init=init or _default_init)
        return factory

    return decorator


def registered_names() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_REGISTRY)


def registered(name: str) -> _Entry | None:
    """The registry entry of ``name`` (its ``factory`` and ``init``), or ``None``."""
    return _REGISTRY.get(name)


def replace_first_conv(model: nn.Module, in_channels: int) -> nn.Module:
    """Give ``model``'s first ``Conv2d`` ``in_channels`` inputs with the same hyper-parameters
    (a new kaiming-normal fan-out weight, the scheme of torchvision's CNNs); a no-op when it
    already has them.

    Raises:
        ConfigError: the model has no ``Conv2d``.
    """
    for name, old in model.named_modules():
        if not isinstance(old, nn.Conv2d):
            continue
        if old.in_channels == in_channels:
            return model
        new = nn.Conv2d(
            in_channels,
            old.out_channels,
            kernel_size=old.kernel_size,  # type: ignore[arg-type]
            stride=old.stride,  # type: ignore[arg-type]
            padding=old.padding,  # type: ignore[arg-type]
            dilation=old.dilation,  # type: ignore[arg-type]
            groups=1 if old.groups == 1 else in_channels,
            bias=old.bias is not None,
            padding_mode=old.padding_mode,
            device=old.weight.device,
        )
        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        if new.bias is not None:
            nn.init.zeros_(new.bias)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new)
        return model
    raise ConfigError("the model has no Conv2d to take the input channels; give a CNN")


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


@register_model("resnet20")
def resnet20(*, num_classes: int, in_channels: int) -> nn.Module:
    """CIFAR ResNet-20 (n=3 blocks per stage, 0.27 M parameters at 10 classes)."""
    return CifarResNet(3, num_classes=num_classes, in_channels=in_channels)


@register_model("resnet56")
def resnet56(*, num_classes: int, in_channels: int) -> nn.Module:
    """CIFAR ResNet-56 (n=9 blocks per stage, 0.86 M parameters at 10 classes)."""
    return CifarResNet(9, num_classes=num_classes, in_channels=in_channels)


def torchvision_models() -> ModuleType:
    """``torchvision.models``, imported on first use: torchvision imports ``torch._dynamo``
    (about 2.5 s of CPU), which a process that builds no torchvision model never needs."""
    import torchvision.models  # noqa: PLC0415

    return torchvision.models


@register_model("resnet18")
def resnet18(*, num_classes: int, in_channels: int) -> nn.Module:
    """torchvision ResNet-18 (1.81 GMACs, 11.7 M parameters at 3x224x224, 1000 classes)."""
    model = torchvision_models().resnet18(weights=None, num_classes=num_classes)
    return replace_first_conv(model, in_channels)


@register_model("resnet50")
def resnet50(*, num_classes: int, in_channels: int) -> nn.Module:
    """torchvision ResNet-50 (4.09 GMACs, 25.6 M parameters at 3x224x224, 1000 classes)."""
    model = torchvision_models().resnet50(weights=None, num_classes=num_classes)
    return replace_first_conv(model, in_channels)


@register_model("mobilenet_v2", init=_small_linear_init)
def mobilenet_v2(*, num_classes: int, in_channels: int) -> nn.Module:
    """torchvision MobileNetV2 (0.30 GMACs, 3.5 M parameters at 3x224x224, 1000 classes)."""
    model = torchvision_models().mobilenet_v2(weights=None, num_classes=num_classes)
    return replace_first_conv(model, in_channels)


@register_model("vgg16_bn", init=_small_linear_init)
def vgg16_bn(*, num_classes: int, in_channels: int) -> nn.Module:
    """torchvision VGG-16 with BN (15.5 GMACs, 138 M parameters at 3x224x224, 1000 classes).

    It has no residual blocks, so it has no depth decisions."""
    model = torchvision_models().vgg16_bn(weights=None, num_classes=num_classes)
    return replace_first_conv(model, in_channels)
