"""Your trained weights as the base model (``model.weights``): read safely, evaluated, never
trained, and what ``finetune`` and ``distill`` start from. Synthetic data, resnet20, CPU."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import autoprune.evaluators._base_model as base_model
from autoprune.config import EvaluatorConfig, ModelConfig, TrainingConfig, load_config
from autoprune.errors import ConfigError
from autoprune.evaluators import (
    DatasetSplits,
    TrainedBase,
    create_evaluator,
    evaluate_accuracy,
    evaluator_class,
    load_dataset,
)
from autoprune.evaluators._weights import load_weights
from autoprune.spaces import Candidate, build_model, count_costs

SHAPE = (1, 28, 28)
BASE = Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=SHAPE)
TRAINING = TrainingConfig(samples=64, epochs=1, batch_size=32, lr=0.05)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _no_base_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a base read from your weights must not be trained")

    monkeypatch.setattr(base_model, "train_model", refuse)


@pytest.fixture(scope="module")
def data() -> DatasetSplits:
    return load_dataset("synthetic", val_samples=100, seed=0)


def randomized(seed: int) -> dict[str, torch.Tensor]:
    """A resnet20 state_dict with distinct values everywhere (a stand-in for training)."""
    model = build_model(BASE, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    state = randomized(1)
    path = tmp_path_factory.mktemp("weights") / "resnet20.pt"
    torch.save(state, path)
    return path, state


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def with_weights(state: dict[str, torch.Tensor]) -> nn.Module:
    model = build_model(BASE, seed=0)
    model.load_state_dict(state)
    return model.eval()


def base_of(path: Path, data: DatasetSplits, folder: Path, **kw: Any) -> TrainedBase:
    return TrainedBase(
        BASE, data=lambda: data, training=TRAINING, seed=0, folder=folder, weights=path, **kw
    )


def test_the_base_is_your_weights_evaluated_once_never_trained(
    saved: tuple[Path, dict[str, torch.Tensor]], data: DatasetSplits, tmp_path: Path
) -> None:
    path, state = saved
    folder = tmp_path / "base"
    model, result = base_of(path, data, folder).get()
    assert same(model.state_dict(), state) and not model.training
    val = evaluate_accuracy(with_weights(state), data, split="val", input_shape=SHAPE)
    test = evaluate_accuracy(with_weights(state), data, split="test", input_shape=SHAPE)
    assert (result.accuracy, result.split, result.evaluator, result.epochs) == (
        val,
        "val",
        "your weights",
        0,
    )
    assert result.input_hw == SHAPE[1:]  # the run's input shape
    assert not (folder / "model.pt").exists()  # nothing trained, nothing copied
    costs = count_costs(build_model(BASE, device="meta"), SHAPE)
    assert TrainedBase.reference(folder) == {
        "label": f"unpruned, your weights ({path})",
        "weights": str(path),
        "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "val_accuracy": val,
        "test_accuracy": test,
        "macs": costs.macs,
        "params": costs.params,
        "input_shape": "1x28x28",
    }

    def no_data() -> DatasetSplits:
        raise AssertionError("the accuracy of the same file is kept, not measured again")

    again = TrainedBase(
        BASE, data=no_data, training=TRAINING, seed=5, folder=folder, weights=str(path)
    )
    loaded, kept = again.get()
    assert same(loaded.state_dict(), state)
    assert (kept.accuracy, kept.label) == (result.accuracy, result.label)  # train_loss: NaN


def test_a_changed_file_is_refused_in_one_line(data: DatasetSplits, tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save(randomized(2), path)
    digest = TrainedBase.weights_digest(path)
    base_of(path, data, tmp_path / "base", weights_sha256=digest).get()
    torch.save(randomized(3), path)  # retrained in place after the run began
    with pytest.raises(ConfigError, match="changed since the run began") as info:
        base_of(path, data, tmp_path / "base", weights_sha256=digest).get()
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    with pytest.raises(ConfigError, match="another configuration") as info:
        base_of(path, data, tmp_path / "base").get()
    assert f"weights {path} with SHA-256 {digest[:12]}" in str(info.value)


@pytest.mark.parametrize(
    "form",
    [
        "state_dict",
        "checkpoint:state_dict",
        "checkpoint:model",
        "checkpoint:model_state_dict",
        "checkpoint:net",
        "checkpoint:ema",
        "model_before_ema",
        "dataparallel",
        "dataparallel_in_checkpoint",
        "compiled",
        "lightning",
    ],
)
def test_checkpoint_dicts_and_wrapper_prefixes_load(form: str, tmp_path: Path) -> None:
    state, other = randomized(4), randomized(5)
    content: Any = {
        "state_dict": state,
        "model_before_ema": {"epoch": 90, "model": state, "model_ema": other},
        "dataparallel": {f"module.{k}": v for k, v in state.items()},
        "dataparallel_in_checkpoint": {
            "epoch": 3,
            "best_acc": 0.93,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
            "state_dict": {f"module.{k}": v for k, v in state.items()},
        },
        "compiled": {f"_orig_mod.{k}": v for k, v in state.items()},
        "lightning": {"epoch": 3, "state_dict": {f"model.{k}": v for k, v in state.items()}},
    }.get(form)
    if form.startswith("checkpoint:"):
        content = {"epoch": 7, "acc": 91.2, form.split(":")[1]: state}
    path = tmp_path / "w.pth"
    torch.save(content, path)
    model, digest = load_weights(BASE, path)
    assert same(model.state_dict(), state)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert TrainedBase.check_weights(BASE, path) == digest


def test_finetune_inherits_the_l1_largest_channels_of_your_weights(
    saved: tuple[Path, dict[str, torch.Tensor]],
    data: DatasetSplits,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, state = saved
    before_finetuning: list[dict[str, torch.Tensor]] = []

    def capture(self: Any, model: nn.Module, candidate: Candidate, **kw: Any) -> None:
        before_finetuning.append({k: v.clone() for k, v in model.state_dict().items()})

    monkeypatch.setattr(evaluator_class("finetune"), "_train", capture)
    base = base_of(path, data, tmp_path / "base")
    finetune = create_evaluator(
        EvaluatorConfig(name="finetune"), data=lambda: data, training=TRAINING, base=base
    )
    assert f"L1-norm channels of your weights ({path})" in finetune.describe()

    finetune.evaluate(BASE, seed=0)  # the full width: exactly your weights
    assert same(before_finetuning[0], state)

    finetune.evaluate(Candidate(**{**BASE.to_dict(), "channels": {"layer2.1.conv1": 12}}), seed=0)
    pre = "layer2.1."
    conv1, bn1, conv2 = (state[pre + n] for n in ("conv1.weight", "bn1.weight", "conv2.weight"))
    # Li et al. 2017 over the group: the filter, its BN scale and the next conv's input slice
    scores = (
        conv1.abs().flatten(1).sum(1) + bn1.abs() + conv2.abs().transpose(0, 1).flatten(1).sum(1)
    )
    kept = sorted(torch.topk(scores, 12).indices.tolist())
    assert kept != list(range(12))  # otherwise the first 12 would pass too
    inherited = before_finetuning[1]
    assert torch.equal(inherited[pre + "conv1.weight"], conv1[kept])
    assert torch.equal(inherited[pre + "bn1.running_var"], state[pre + "bn1.running_var"][kept])
    assert torch.equal(inherited[pre + "conv2.weight"], conv2[:, kept])


def test_distill_teaches_with_your_weights(
    saved: tuple[Path, dict[str, torch.Tensor]],
    data: DatasetSplits,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, state = saved
    teachers: list[nn.Module] = []

    def capture(self: Any, model: nn.Module, candidate: Candidate, **kw: Any) -> None:
        teachers.append(kw["distillation"].teacher)

    monkeypatch.setattr(evaluator_class("distill"), "_train", capture)
    base = base_of(path, data, tmp_path / "base")
    distill = create_evaluator(
        EvaluatorConfig(name="distill"), data=lambda: data, training=TRAINING, base=base
    )
    assert f"your weights ({path}) as teacher" in distill.describe()
    distill.evaluate(Candidate(**{**BASE.to_dict(), "channels": {"conv1": 8}}), seed=0)
    assert len(teachers) == 1 and same(teachers[0].state_dict(), state)
    assert teachers[0] is base.get()[0]


def test_model_weights_is_a_path_or_null() -> None:
    assert ModelConfig(weights=Path("runs") / "w.pt").weights == "runs/w.pt"
    assert ModelConfig().weights is None and ModelConfig().weights_sha256 is None
    config = load_config(overrides=["model.weights=/data/resnet20.pt"])
    assert config.model.weights == "/data/resnet20.pt"
    assert load_config(values={"model.weights": "w.pt"}).model.weights == "w.pt"
    with pytest.raises(ConfigError, match="model.weights must be the path of a file"):
        ModelConfig(weights=" ")
    with pytest.raises(ConfigError, match="model.weights must be a string or null"):
        load_config(overrides=["model.weights=3"])
    with pytest.raises(ConfigError, match="model.weights_sha256 must be 64 lowercase hex"):
        ModelConfig(weights="w.pt", weights_sha256="abc")
