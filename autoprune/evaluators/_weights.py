"""Your trained weights for the base model (``model.weights``): read safely, checked, loaded.

A file saved with ``torch.save(model.state_dict(), PATH)``, or a checkpoint dict holding the
``state_dict`` under a key of :data:`CHECKPOINT_KEYS`, read with ``torch.load(weights_only=True)``
(never ``False``: a weights file must not run code) and loaded with ``strict=True``. Every problem
is one :class:`~autoprune.errors.ConfigError` line naming the file and the fix.

Example:
    >>> from autoprune.spaces import Candidate, build_model
    >>> resnet = Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=(1, 28, 28))
    >>> torch.save({"state_dict": build_model(resnet).state_dict()}, "resnet20.pt")  # a checkpoint
    >>> model, sha256 = load_weights(resnet, Path("resnet20.pt"))
    >>> sha256 == hashlib.sha256(Path("resnet20.pt").read_bytes()).hexdigest()
    True
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.spaces import Candidate, build_model

__all__ = ["CHECKPOINT_KEYS", "load_weights", "weights_digest"]

#: Where a checkpoint dict keeps the network's ``state_dict``, tried in this order: PyTorch's
#: tutorials and Lightning (``state_dict``, ``model_state_dict``), torchvision's reference
#: scripts and timm (``model``, ``state_dict``), CIFAR training repositories (``net``); an
#: exponential moving average of the weights only when none of these is there.
CHECKPOINT_KEYS = (
    "state_dict",
    "model_state_dict",
    "model",
    "net",
    "ema",
    "model_ema",
    "state_dict_ema",
)
#: Key prefixes stripped when every key has one: ``DataParallel`` / DDP and ``torch.compile``.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

_SAVE_HINT = "save the network's weights with torch.save(model.state_dict(), PATH)"


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"model.weights {str(path)!r} does not exist; pass the file your trained network's "
            f"weights were saved to with torch.save(model.state_dict(), PATH), or null to train "
            f"the base"
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            f"model.weights {str(path)!r} is a directory; pass the file in it that holds the "
            f"weights ({_SAVE_HINT})"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"model.weights {str(path)!r} cannot be read ({exc.strerror or exc}); make it "
            f"readable, or pass another file"
        ) from None


def weights_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a weights file; :class:`ConfigError` when it cannot be read."""
    return hashlib.sha256(_read_bytes(Path(path))).hexdigest()


def _is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _state_dict_of(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` in what ``torch.load`` returned: itself, or one under
    :data:`CHECKPOINT_KEYS`; wrapper prefixes stripped."""
    state: Any = None
    if _is_state_dict(loaded):
        state = loaded
    elif isinstance(loaded, Mapping):
        state = next((loaded[k] for k in CHECKPOINT_KEYS if _is_state_dict(loaded.get(k))), None)
    if state is None:
        what = (
            f"a dict with keys {', '.join(map(str, list(loaded)[:6]))}"
            if isinstance(loaded, Mapping)
            else f"a {type(loaded).__name__}"
        )
        raise ConfigError(
            f"model.weights {str(path)!r} holds no state_dict ({what}); expected a dict of "
            f"tensors or a checkpoint with one under {', '.join(CHECKPOINT_KEYS)}; {_SAVE_HINT}"
        )
    state = dict(state)
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The ``state_dict`` of a weights file and the file's SHA-256, from one read."""
    data = _read_bytes(path)
    if not data.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip, or a legacy pickle
        raise ConfigError(
            f"model.weights {str(path)!r} is not a PyTorch file that torch.load can read (not "
            f"torch.save's zip archive nor a pickle); {_SAVE_HINT}"
        )
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises whatever its unpickler or zip reader does
        text = str(exc)
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if refused or "Weights only load failed" in text:
            what = refused.group(1) if refused else "a Python object"
            raise ConfigError(
                f"model.weights {str(path)!r} holds {what}, which torch.load(weights_only=True) "
                f"refuses to unpickle; {_SAVE_HINT} where the model was trained"
            ) from None
        first = text.strip().splitlines()[0].split(". ")[0][:100] if text.strip() else ""
        reason = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise ConfigError(
            f"model.weights {str(path)!r} is not a PyTorch file that torch.load can read "
            f"({reason}); {_SAVE_HINT}"
        ) from None
    return _state_dict_of(loaded, path), hashlib.sha256(data).hexdigest()


def _without_shared_prefix(
    state: dict[str, torch.Tensor], expected: set[str]
) -> dict[str, torch.Tensor]:
    """``state`` less a dotted prefix that all its keys share (a wrapper's attribute, e.g. a
    Lightning module's ``model.``), when what remains are exactly the ``expected`` keys."""
    current = state
    while set(current) != expected and all("." in k for k in current):
        if len({k.split(".", 1)[0] for k in current}) != 1:
            break
        current = {k.split(".", 1)[1]: v for k, v in current.items()}
    return current if set(current) == expected else state


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _check_fit(
    state: Mapping[str, torch.Tensor], model: nn.Module, c: Candidate, path: Path
) -> None:
    """Raise :class:`ConfigError` unless ``state`` loads into ``model`` with ``strict=True``."""
    expected = model.state_dict()
    net = f"{c.model} with model.num_classes {c.num_classes}, model.in_channels {c.in_channels}"
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = [f"{len(missing)} missing ({_names(missing)})"] if missing else []
        parts += [f"{len(unexpected)} unexpected ({_names(unexpected)})"] if unexpected else []
        raise ConfigError(
            f"model.weights {str(path)!r} does not fit {net}: state_dict keys "
            f"{', '.join(parts)}; set model.name to the network the weights were saved from"
        )
    for key, ours in expected.items():
        theirs = state[key]
        if tuple(theirs.shape) != tuple(ours.shape):
            there, here = "x".join(map(str, theirs.shape)), "x".join(map(str, ours.shape))
            raise ConfigError(
                f"model.weights {str(path)!r} does not fit {net}: {key} is {there} there, "
                f"{here} here; {_shape_fix(tuple(theirs.shape), tuple(ours.shape), c)}"
            )
        if theirs.is_floating_point() and not bool(torch.isfinite(theirs).all()):
            raise ConfigError(
                f"model.weights {str(path)!r} has NaN or infinite values in {key}; pass "
                f"weights saved before training diverged"
            )


def _shape_fix(theirs: tuple[int, ...], ours: tuple[int, ...], c: Candidate) -> str:
    """What to change when a tensor of the weights has another shape than the network's."""
    fix = "model.num_classes and model.in_channels must match the weights"
    if len(ours) in (1, 2) and ours[0] == c.num_classes and theirs[1:] == ours[1:]:
        return f"{fix}: they classify {theirs[0]} classes (model.num_classes={theirs[0]})"
    if (
        len(ours) == 4
        and ours[1] == c.in_channels
        and theirs[:1] + theirs[2:] == ours[:1] + ours[2:]
    ):
        return (
            f"{fix}: they take {theirs[1]}-channel images (model.in_channels={theirs[1]}, "
            f"and data.input_shape)"
        )
    return f"{fix}, and model.name the network they were saved from"


def load_weights(candidate: Candidate, path: Path) -> tuple[nn.Module, str]:
    """``candidate``'s network (``strict=True``) with the weights in ``path``, and the file's
    SHA-256."""
    state, digest = _read_weights(path)
    model = build_model(candidate, seed=0)
    state = _without_shared_prefix(state, set(model.state_dict()))
    _check_fit(state, model, candidate, path)
    model.load_state_dict(state, strict=True)
    return model, digest
