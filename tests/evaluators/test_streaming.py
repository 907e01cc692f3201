"""Streamed splits: imagefolder read per batch, and a user's own Datasets (from_datasets)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from autoprune.errors import ConfigError, DataError
from autoprune.evaluators import (
    DatasetSplits,
    Fidelity,
    Split,
    StreamedSplit,
    evaluate_accuracy,
    load_dataset,
    train_model,
)
from tests.conftest import tiny_cnn

SHAPE = (3, 8, 8)
CLASSES = ("a_red", "b_green", "c_blue")


def write_folder(
    root: Path, *, per_class: int = 12, test_per_class: int = 3, seed: int = 0
) -> Path:
    """Images of three colour classes, of several sizes, with noise: learnable, not trivial."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for k, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = (int(v) for v in rng.integers(8, 17, size=2))
                pixels = rng.integers(0, 120, size=(h, w, 3))
                pixels[..., k] += 120
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


def load(root: Path, cache: str, cache_dir: Path, *, workers: int = 0) -> DatasetSplits:
    return load_dataset(
        "imagefolder",
        root=root,
        val_samples=6,
        seed=0,
        input_shape=SHAPE,
        num_workers=workers,
        cache_dir=cache_dir,
        cache=cache,
    )


def rgb_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 3),
    )


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach().cpu() for t in model.state_dict().values()]


# --- imagefolder ---------------------------------------------------------------------------------


def test_streamed_imagefolder_trains_exactly_like_the_same_folder_in_memory(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "tree")
    memory = load(root, "memory", tmp_path / "c1")
    stream = load(root, "stream", tmp_path / "c2", workers=2)
    assert isinstance(memory.train, Split) and isinstance(stream.train, StreamedSplit)
    assert stream.streamed and not memory.streamed
    assert (memory.mean, memory.std) == (stream.mean, stream.std)  # the same sample, same sums
    assert memory.class_names == stream.class_names == CLASSES
    assert (len(stream.train), len(stream.val), len(stream.test)) == (30, 6, 9)
    # the same images in the same order, split by the same seed
    images, labels = stream.val.take(torch.arange(6))
    assert torch.equal(images, memory.val.images) and torch.equal(labels, memory.val.labels)
    fidelity = Fidelity(samples=20, epochs=1.5, batch_size=8)  # a subset, a fractional epoch
    results = []
    models = [rgb_cnn(), rgb_cnn()]
    for model, data in zip(models, (memory, stream), strict=True):
        results.append(train_model(model, data, fidelity=fidelity, input_shape=SHAPE, seed=3))
    a, b = results
    assert (a.accuracy, a.train_loss, a.samples) == (b.accuracy, b.train_loss, b.samples)
    for p, q in zip(weights(models[0]), weights(models[1]), strict=True):
        assert torch.equal(p, q)
    test_a = evaluate_accuracy(models[0], memory, split="test", input_shape=SHAPE, batch_size=4)
    assert test_a == evaluate_accuracy(models[1], stream, split="test", input_shape=SHAPE)


def test_streaming_decodes_nothing_into_memory_or_onto_disk(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "tree")
    data = load(root, "stream", tmp_path / "cache")
    assert data.input_shape == SHAPE and data.num_classes == 3
    # no decoded-image cache; only the normalisation statistics of the seeded sample
    (stats,) = (tmp_path / "cache").iterdir()
    assert stats.name.startswith("imagefolder-stats-") and stats.suffix == ".json"
    assert json.loads(stats.read_text())["mean"] == list(data.mean)
    # a second load reads them: overwritten figures come back
    record = json.loads(stats.read_text())
    stats.write_text(json.dumps({**record, "mean": [0.25, 0.5, 0.75]}))
    assert load(root, "stream", tmp_path / "cache").mean == (0.25, 0.5, 0.75)
    assert load(root, "auto", tmp_path / "cache").mean == (0.25, 0.5, 0.75)  # mode-independent


def test_auto_streams_a_folder_that_would_not_fit_where_memory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_folder(tmp_path / "tree")
    decoded = 45 * 3 * 8 * 8
    memory = psutil.virtual_memory()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory._replace(available=decoded))
    with pytest.raises(DataError, match="set data.cache: stream") as info:
        load(root, "memory", tmp_path / "cache")
    assert "\n" not in str(info.value)
    assert load(root, "auto", tmp_path / "cache").streamed
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory._replace(available=4 * decoded))
    assert not load(root, "auto", tmp_path / "cache").streamed


def test_a_corrupt_image_met_while_streaming_is_one_line_naming_it(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "tree")
    bad = root / "train" / "b_green" / "004.png"
    bad.write_bytes(b"\x89PNG but not really")
    # the statistics' sample is every training image here, so loading meets it already
    for workers in (0, 2):
        with pytest.raises(
            DataError, match="cannot decode image .*004.png.*replace or remove"
        ) as info:
            load(root, "stream", tmp_path / f"c{workers}", workers=workers)
        assert "\n" not in str(info.value)


def test_cache_must_be_a_mode_and_only_imagefolder_streams() -> None:
    with pytest.raises(ConfigError, match="data.cache must be one of auto, memory, stream"):
        load_dataset("synthetic", val_samples=10, cache="disk")
    with pytest.raises(ConfigError, match="'synthetic' is held in memory and cannot be streamed"):
        load_dataset("synthetic", val_samples=10, cache="stream")
    assert not load_dataset("synthetic", val_samples=10, cache="memory").streamed


# --- a user's Datasets ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic() -> DatasetSplits:
    return load_dataset("synthetic", val_samples=500, seed=0)


def as_datasets(data: DatasetSplits) -> DatasetSplits:
    """The same images as ``TensorDataset``s, streamed, with the same statistics."""
    parts = [TensorDataset(s.images, s.labels) for s in (data.train, data.val, data.test)]
    return DatasetSplits.from_datasets(
        *parts, mean=data.mean, std=data.std, num_workers=0, name="synthetic-stream"
    )


def test_datasets_train_exactly_like_the_same_images_in_memory(synthetic: DatasetSplits) -> None:
    stream = as_datasets(synthetic)
    assert stream.input_shape == (1, 28, 28) and stream.num_classes == 10 and stream.streamed
    fidelity = Fidelity(samples=300, epochs=1.5, batch_size=64, resolution_scale=0.75)
    models = [tiny_cnn(), tiny_cnn()]
    a, b = (
        train_model(m, d, fidelity=fidelity, input_shape=(1, 28, 28), seed=5, device="cpu")
        for m, d in zip(models, (synthetic, stream), strict=True)
    )
    assert (a.accuracy, a.train_loss, a.input_hw) == (b.accuracy, b.train_loss, b.input_hw)
    for p, q in zip(weights(models[0]), weights(models[1]), strict=True):
        assert torch.equal(p, q)


def test_float_images_stream_and_early_stopping_stops_the_workers(
    synthetic: DatasetSplits,
) -> None:
    floats = TensorDataset(synthetic.train.images.float() / 255.0, synthetic.train.labels)
    data = DatasetSplits.from_datasets(floats, val_samples=200, num_workers=2)
    assert (len(data.train), len(data.val)) == (1300, 200) and data.test is data.val
    # sampled statistics of float pixels match those of the same pixels as uint8
    uint8 = DatasetSplits.from_datasets(
        TensorDataset(synthetic.train.images, synthetic.train.labels), val_samples=200
    )
    assert data.mean == pytest.approx(uint8.mean) and data.std == pytest.approx(uint8.std)

    class Stop(Exception):
        pass

    def stop(epoch: int, epochs: float, accuracy: float) -> None:
        assert accuracy > 0.15
        raise Stop

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(Stop):
        train_model(
            tiny_cnn(),
            data,
            fidelity=Fidelity(samples=512, epochs=3, batch_size=64),
            input_shape=(1, 28, 28),
            seed=0,
            on_epoch=stop,
        )
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert psutil.wait_procs(left, timeout=10)[1] == []  # every worker process has exited


def test_the_naswot_proxy_scores_the_same_batch_streamed(synthetic: DatasetSplits) -> None:
    from autoprune.config import EvaluatorConfig, TrainingConfig
    from autoprune.evaluators import create_evaluator
    from autoprune.spaces import Candidate

    candidate = Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=(1, 28, 28))
    scores = []
    for data in (synthetic, as_datasets(synthetic)):
        proxy = create_evaluator(
            EvaluatorConfig(name="proxy", settings={"proxy": {"proxy": "naswot"}}),
            data=lambda data=data: data,
            training=TrainingConfig(),
            base=None,  # type: ignore[arg-type]  # the proxy needs no base
        )
        scores.append(proxy.evaluate(candidate, seed=0)[1].accuracy)
    assert scores[0] == scores[1]


class Plain(Dataset):
    """A Dataset with no labels attribute: its class count cannot be read cheaply."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.y = images, labels

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.y[i])


def test_classes_come_from_cheap_labels_or_num_classes() -> None:
    images = torch.randint(0, 256, (30, 3, 5, 5), dtype=torch.uint8)
    labels = torch.arange(30) % 3
    tensor = DatasetSplits.from_datasets(TensorDataset(images, labels), val_samples=5)
    assert tensor.num_classes == 3 and tensor.class_names == ()
    plain = Plain(images, labels)
    with pytest.raises(ConfigError, match="without reading every item.*pass num_classes=N"):
        DatasetSplits.from_datasets(plain, val_samples=5)
    named = DatasetSplits.from_datasets(plain, val_samples=5, class_names=("a", "b", "c"))
    assert named.num_classes == 3 and named.class_names == ("a", "b", "c")
    subset = Subset(TensorDataset(images, labels), list(range(0, 30, 2)))  # labels 0, 2, 1, ...
    assert DatasetSplits.from_datasets(subset, val_samples=3).num_classes == 3


def test_from_datasets_reads_a_torchvision_image_folder(tmp_path: Path) -> None:
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    root = write_folder(tmp_path / "tree")
    fit = transforms.Compose(
        [transforms.Resize(8), transforms.CenterCrop(8), transforms.ToTensor()]
    )
    train = ImageFolder(str(root / "train"), transform=fit)
    test = ImageFolder(str(root / "test"), transform=fit)
    data = DatasetSplits.from_datasets(train, None, test, val_samples=6, num_workers=2)
    assert data.class_names == CLASSES and data.num_classes == 3 and data.input_shape == SHAPE
    result = train_model(
        rgb_cnn(),
        data,
        fidelity=Fidelity(samples=None, epochs=1, batch_size=8),
        input_shape=SHAPE,
        seed=0,
    )
    assert result.samples == 30 and 0 <= result.accuracy <= 1


@pytest.mark.parametrize(
    ("train", "kw", "fragment"),
    [
        (42, {}, "train must be a map-style torch.utils.data.Dataset"),
        (TensorDataset(torch.zeros(0, 1, 2, 2), torch.zeros(0)), {}, "the train Dataset is empty"),
        (TensorDataset(torch.zeros(4, 2, 2), torch.zeros(4)), {}, r"tensor of shape \(2, 2\), not"),
        (
            TensorDataset(torch.full((4, 1, 2, 2), -2.0), torch.zeros(4)),
            {},
            "drop transforms.Normalize",
        ),
        (
            TensorDataset(torch.zeros(4, 1, 2, 2, dtype=torch.int32), torch.zeros(4)),
            {},
            "torch.int32",
        ),
        (TensorDataset(torch.zeros(4, 1, 2, 2)), {}, "train\\[0\\] is a tuple, not a pair"),
        (
            TensorDataset(torch.zeros(4, 1, 2, 2), torch.arange(4)),
            {"num_classes": 2},
            "labels in \\[0, 3\\]",
        ),
        (
            TensorDataset(torch.zeros(4, 1, 2, 2), torch.arange(4)),
            {"class_names": ("a",), "num_classes": 4},
            "1 names",
        ),
        (
            TensorDataset(torch.zeros(4, 1, 2, 2), torch.arange(4)),
            {"mean": (0.5,)},
            "mean and std together",
        ),
        (
            TensorDataset(torch.zeros(4, 1, 2, 2), torch.arange(4)),
            {"mean": (0.5, 0.5), "std": (1, 1)},
            "1 finite numbers each",
        ),
        (
            TensorDataset(torch.zeros(4, 1, 2, 2), torch.arange(4)),
            {"val_samples": 4},
            r"val_samples must be an integer in \[1, 3\]",
        ),
    ],
)
def test_from_datasets_errors_are_one_line_config_errors(
    train: object, kw: dict[str, object], fragment: str
) -> None:
    kw = {"val_samples": 1, **kw}
    with pytest.raises(ConfigError, match=fragment) as info:
        DatasetSplits.from_datasets(train, **kw)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_splits_must_agree_and_test_defaults_to_val_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = TensorDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.arange(4) % 2)
    b = TensorDataset(torch.zeros(4, 1, 3, 3, dtype=torch.uint8), torch.arange(4) % 2)
    with pytest.raises(ConfigError, match=r"val\[0\] is \(1, 3, 3\) uint8 but train\[0\] is"):
        DatasetSplits.from_datasets(a, b)
    with caplog.at_level(logging.WARNING, logger="autoprune"):
        data = DatasetSplits.from_datasets(a, a, num_workers=0)
    assert "the test split is the validation split" in caplog.text and data.test is data.val


def test_a_broken_item_while_training_is_one_line() -> None:
    class Broken(Plain):
        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            if i == 7:
                raise OSError("disk on fire")
            return super().__getitem__(i)

    images = torch.zeros(20, 1, 4, 4, dtype=torch.uint8)
    data = DatasetSplits.from_datasets(
        Broken(images, torch.arange(20) % 2), num_classes=2, val_samples=2, mean=[0.5], std=[0.5]
    )
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with pytest.raises(
        DataError, match=r"reading item 7 of the Broken failed \(OSError: disk on fire\)"
    ) as info:
        train_model(
            model,
            data,
            fidelity=Fidelity(samples=None, epochs=1, batch_size=6),
            input_shape=(1, 4, 4),
            seed=0,
        )
    assert "\n" not in str(info.value)
