from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.evaluators import (
    DatasetSplits,
    Fidelity,
    TrainingDiverged,
    evaluate_accuracy,
    load_dataset,
    train_model,
)
from tests.conftest import tiny_cnn

SHAPE = (1, 28, 28)


@pytest.fixture(scope="module")
def data() -> DatasetSplits:
    return load_dataset("synthetic", val_samples=500, seed=0)


def tiny_cnn_recording_batches() -> tuple[nn.Module, list[int]]:
    """:func:`tiny_cnn` and the list its forward passes append their batch sizes to."""
    calls: list[int] = []
    model = tiny_cnn()
    model.register_forward_hook(lambda m, inp, out: calls.append(int(inp[0].shape[0])))
    return model, calls


def test_training_beats_chance_clearly(data: DatasetSplits) -> None:
    model = tiny_cnn()
    untrained = evaluate_accuracy(model, data, split="val", input_shape=SHAPE)
    result = train_model(
        model, data, fidelity=Fidelity(samples=None, epochs=2), input_shape=SHAPE, seed=0
    )
    assert untrained < 0.3
    assert result.accuracy > 0.6  # chance is 0.1
    assert result.split == "val" and result.samples == 1500 and result.epochs == 2
    assert result.input_hw == (28, 28)
    assert result.train_seconds > 0 and result.images_per_second > 0
    assert 0 < result.train_loss < 2.3  # below log(10), the loss of a uniform guess
    # the returned accuracy is the model's accuracy on val, measured again
    assert evaluate_accuracy(model, data, split="val", input_shape=SHAPE) == result.accuracy


def test_same_seed_same_result_and_other_seed_differs(data: DatasetSplits) -> None:
    fidelity = Fidelity(samples=800, epochs=2, batch_size=64)
    models = [tiny_cnn(), tiny_cnn(), tiny_cnn()]
    results = [
        train_model(m, data, fidelity=fidelity, input_shape=SHAPE, seed=s)
        for m, s in zip(models, (7, 7, 8), strict=True)
    ]
    a, b, c = results
    assert a.accuracy == b.accuracy and a.train_loss == b.train_loss
    for p, q in zip(models[0].state_dict().values(), models[1].state_dict().values(), strict=True):
        assert torch.equal(p, q)
    assert c.train_loss != a.train_loss  # another subset and order
    assert c.seed == 8


def test_caller_rng_state_is_left_alone(data: DatasetSplits) -> None:
    model = tiny_cnn()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_model(model, data, fidelity=Fidelity(samples=100, epochs=1), input_shape=SHAPE, seed=5)
    assert torch.equal(torch.rand(3), expected)


class ShapeRecorder(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.shapes: set[tuple[int, int]] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.add((int(x.shape[-2]), int(x.shape[-1])))
        return self.inner(x)


@pytest.mark.parametrize(
    ("input_shape", "scale", "hw"),
    [((1, 28, 28), 0.5, (14, 14)), ((1, 32, 32), 1.0, (32, 32)), ((1, 32, 24), 0.75, (24, 18))],
)
def test_resolution_scaling_trains_and_evaluates_at_the_scaled_size(
    data: DatasetSplits, input_shape: tuple[int, int, int], scale: float, hw: tuple[int, int]
) -> None:
    model = ShapeRecorder(tiny_cnn())
    fidelity = Fidelity(samples=None, epochs=2, resolution_scale=scale)
    result = train_model(model, data, fidelity=fidelity, input_shape=input_shape, seed=0)
    assert model.shapes == {hw}
    assert result.input_hw == hw
    assert result.accuracy > 0.4  # still learns at the other resolution


def test_sample_subset_and_clamping(data: DatasetSplits, caplog: pytest.LogCaptureFixture) -> None:
    model, calls = tiny_cnn_recording_batches()
    result = train_model(
        model,
        data,
        fidelity=Fidelity(samples=250, epochs=2, batch_size=100),
        input_shape=SHAPE,
        seed=0,
    )
    # 250 images in batches of 100, twice, then the val split in one batch of 500
    assert calls == [100, 100, 50, 100, 100, 50, 500]
    assert result.samples == 250
    with caplog.at_level(logging.WARNING, logger="autoprune.evaluators"):
        clamped = train_model(
            tiny_cnn(), data, fidelity=Fidelity(samples=10**6, epochs=1), input_shape=SHAPE, seed=0
        )
    assert clamped.samples == len(data.train)
    assert "1000000 training samples" in caplog.text


def test_a_fractional_epoch_trains_that_share_of_one_more_pass(data: DatasetSplits) -> None:
    model, calls = tiny_cnn_recording_batches()
    hooked: list[tuple[int, float]] = []
    result = train_model(
        model,
        data,
        fidelity=Fidelity(samples=250, epochs=1.5, batch_size=100),
        input_shape=SHAPE,
        seed=0,
        on_epoch=lambda epoch, epochs, accuracy: hooked.append((epoch, epochs)),
    )
    # a pass of 3 batches, 2 of the 3 batches of a second (round(1.5)), then val in one batch;
    # the hook's val pass comes after the first pass
    assert calls == [100, 100, 50, 500, 100, 100, 500]
    assert hooked == [(1, 1.5)]
    assert result.epochs == 1.5 and result.fidelity.epochs == 1.5
    whole = train_model(
        tiny_cnn(),
        data,
        fidelity=Fidelity(samples=250, epochs=1, batch_size=100),
        input_shape=SHAPE,
        seed=0,
    )
    assert result.accuracy != whole.accuracy  # the extra batches trained


def test_a_final_batch_of_one_image_is_skipped(data: DatasetSplits) -> None:
    model, calls = tiny_cnn_recording_batches()
    train_model(
        model,
        data,
        fidelity=Fidelity(samples=65, epochs=1, batch_size=32),
        input_shape=SHAPE,
        seed=0,
    )
    assert calls[:-1] == [32, 32]  # BatchNorm cannot train on one image


def test_divergence_raises_training_diverged(data: DatasetSplits) -> None:
    with pytest.raises(TrainingDiverged, match="training diverged: loss nan") as info:
        train_model(
            tiny_cnn(),
            data,
            fidelity=Fidelity(samples=None, epochs=2, batch_size=32),
            input_shape=SHAPE,
            seed=0,
            lr=1e6,
        )
    assert info.value.epoch == 0 and info.value.step < 47


def test_channel_mismatch_is_a_config_error(data: DatasetSplits) -> None:
    with pytest.raises(ConfigError, match=r"has 3 channels but data set 'synthetic' has 1"):
        train_model(
            tiny_cnn(),
            data,
            fidelity=Fidelity(samples=10, epochs=1),
            input_shape=(3, 28, 28),
            seed=0,
        )


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("lr", 0.0),
        ("lr", float("nan")),
        ("momentum", 0.0),
        ("momentum", 1.0),
        ("weight_decay", -1.0),
    ],
)
def test_optimizer_options_out_of_range_are_config_errors(
    data: DatasetSplits, option: str, value: float
) -> None:
    with pytest.raises(ConfigError, match=f"train.{option} must be"):
        train_model(
            tiny_cnn(),
            data,
            fidelity=Fidelity(samples=10, epochs=1),
            input_shape=SHAPE,
            seed=0,
            **{option: value},  # type: ignore[arg-type]
        )


def test_evaluate_accuracy_matches_a_direct_count(data: DatasetSplits) -> None:
    model = tiny_cnn()
    train_model(model, data, fidelity=Fidelity(samples=None, epochs=1), input_shape=SHAPE, seed=0)
    mean, std = data.mean[0], data.std[0]
    device = next(model.parameters()).device  # training leaves the model on the GPU if any
    with torch.no_grad():
        x = ((data.test.images.float() / 255.0 - mean) / std).to(device)
        predicted = model(x).argmax(1).cpu()
        expected = int((predicted == data.test.labels).sum()) / len(data.test)
    got = evaluate_accuracy(model, data, split="test", input_shape=SHAPE)
    assert got == expected
    assert evaluate_accuracy(model, data, split="test", input_shape=SHAPE, batch_size=7) == got
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        evaluate_accuracy(model, data, split="dev", input_shape=SHAPE)  # type: ignore[arg-type]


def test_progress_bar_runs(data: DatasetSplits, capsys: pytest.CaptureFixture[str]) -> None:
    train_model(
        tiny_cnn(),
        data,
        fidelity=Fidelity(samples=200, epochs=1, batch_size=50),
        input_shape=SHAPE,
        seed=0,
        progress=True,
    )
    assert "train" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_defaults_to_the_gpu(data: DatasetSplits) -> None:
    model = tiny_cnn()
    result = train_model(
        model, data, fidelity=Fidelity(samples=None, epochs=2), input_shape=SHAPE, seed=0
    )
    assert next(model.parameters()).device.type == "cuda"
    assert result.accuracy > 0.6


def test_one_thread_trains_a_narrow_strided_projection() -> None:
    """One PyTorch thread (as under Ray with one CPU a trial): a strided 1x1 convolution with 4
    input channels, which oneDNN's channels-last backward crashes on at one thread, trains."""
    script = """
import torch
from torch import nn
from autoprune.evaluators import Fidelity, load_dataset, train_model
assert torch.get_num_threads() == 1
model = nn.Sequential(
    nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 1, stride=2), nn.ReLU(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
)
data = load_dataset("synthetic", val_samples=100, seed=0)
fidelity = Fidelity(samples=512, epochs=2, batch_size=64)
result = train_model(model, data, fidelity=fidelity, input_shape=(1, 28, 28), seed=0)
print(result.accuracy)
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert 0.0 <= float(done.stdout.split()[-1]) <= 1.0


def test_channels_last_training_on_the_cpu_hands_back_a_contiguous_model(
    data: DatasetSplits,
) -> None:
    from autoprune.evaluators._evaluate import uses_channels_last

    assert uses_channels_last(torch.device("cpu"), None) == (torch.get_num_threads() > 1)
    fidelity = Fidelity(samples=None, epochs=2)
    plain, last = tiny_cnn(), tiny_cnn()
    a = train_model(plain, data, fidelity=fidelity, input_shape=SHAPE, seed=0, channels_last=False)
    b = train_model(last, data, fidelity=fidelity, input_shape=SHAPE, seed=0, channels_last=True)
    assert all(p.is_contiguous() for p in last.parameters())  # as saved and exported
    assert b.accuracy > 0.6 and abs(a.accuracy - b.accuracy) <= 0.05  # the same training
