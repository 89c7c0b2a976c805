"""Image datasets: IDX parsing, channel statistics, Fashion-MNIST from Debian's files (when installed)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from wsdlab.common.errors import DataUnavailableError
from wsdlab.data import DataConfig, ImageBundle, load_data
from wsdlab.data.vision import (
    FASHION_MNIST_DIR,
    channel_stats,
    normalize,
    parse_idx,
    read_idx,
)

HAS_FMNIST = (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in IDX: magic 0,0,0x08,ndim; big-endian int32 dims; data."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def test_parse_idx_round_trip_and_bad_magic(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(parse_idx(idx_bytes(arr)), arr)
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(arr)))
    assert np.array_equal(read_idx(path), arr)
    with pytest.raises(ValueError, match="magic"):
        parse_idx(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="truncated"):
        parse_idx(idx_bytes(arr)[:-1])


def test_channel_stats_match_numpy() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(37, 3, 5, 4), dtype=np.uint8)
    mean, std = channel_stats(images, chunk=8)
    x = images.astype(np.float64) / 255.0
    assert np.allclose(mean, x.mean(axis=(0, 2, 3)), atol=1e-6)
    assert np.allclose(std, x.std(axis=(0, 2, 3)), atol=1e-6)
    z = normalize(images, mean, std)
    assert z.dtype == np.float32 and np.allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5)


def test_fashion_mnist_from_a_directory(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 12), ("t10k", 5)):
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(rng.integers(0, 256, size=(n, 28, 28)))))
        (tmp_path / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(n) % 10))  # un-gzipped too
    data = load_data(DataConfig(source="fashion_mnist", path=str(tmp_path)), progress=False)
    assert isinstance(data, ImageBundle)
    assert (data.num_train, data.num_val, data.num_classes, data.tokens_per_item) == (12, 5, 10, 1)
    images, labels = data.val_batch(np.array([4, 0]))
    assert images.shape == (2, 1, 28, 28) and images.dtype == torch.float32
    assert labels.tolist() == [4, 0] and labels.dtype == torch.int64
    with pytest.raises(ValueError, match="decode"):
        data.decode([1])


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match="apt-get install dataset-fashion-mnist.*CIFAR-10"):
        load_data(DataConfig(source="fashion_mnist", path=str(tmp_path)))


def test_missing_cifar10_names_both_datasets(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match=r"CIFAR-10 not found.*torchvision==0\.28.*Fashion-MNIST.*dataset-fashion-mnist"):
        load_data(DataConfig(source="cifar10", path=str(tmp_path / "cifar")))


def cifar_record_images(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[int]]:
    """n CIFAR rows as the dataset page describes them: 3072 bytes, the 1024 red values of the 32x32
    image row-major, then the green, then the blue; labels 0..9."""
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, size=n)]


@pytest.mark.parametrize("layout", ["python", "binary"])
def test_cifar10_batches_without_torchvision(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(2)
    rows: dict[str, tuple[np.ndarray, list[int]]] = {}
    folder = tmp_path / ("cifar-10-batches-py" if layout == "python" else "cifar-10-batches-bin")
    folder.mkdir()
    for name, n in [*((f"data_batch_{i}", 3) for i in range(1, 6)), ("test_batch", 4)]:
        data, labels = rows[name] = cifar_record_images(rng, n)
        if layout == "python":  # the python version: a pickled dict (the real files are Python 2 pickles)
            (folder / name).write_bytes(pickle.dumps({b"batch_label": b"x", b"labels": labels, b"data": data}, protocol=2))
        else:  # the binary version: <1 x label><3072 x pixel> per image
            records = np.concatenate([np.asarray(labels, dtype=np.uint8)[:, None], data], axis=1)
            (folder / f"{name}.bin").write_bytes(records.tobytes())
    data = load_data(DataConfig(source="cifar10", path=str(tmp_path)), progress=False)
    assert (data.num_train, data.num_val, data.num_classes) == (15, 4, 10)
    splits = data.splits
    raw, labels = rows["data_batch_2"]
    assert splits.train_labels[3:6].tolist() == labels
    # pixel (channel c, row y, column x) of image i is byte c * 1024 + 32 * y + x of its row
    assert splits.train_images[4, 1, 2, 5] == raw[1, 1024 + 32 * 2 + 5]
    assert splits.val_images.shape == (4, 3, 32, 32) and splits.val_labels.tolist() == rows["test_batch"][1]


def test_cifar10_python_batch_refuses_other_globals(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (folder / name).write_bytes(pickle.dumps({"data": Path("x"), "labels": [0]}))
    with pytest.raises(DataUnavailableError, match="not a CIFAR-10 python batch.*refusing"):
        load_data(DataConfig(source="cifar10", path=str(tmp_path)), progress=False)


@pytest.mark.skipif(not HAS_FMNIST, reason="dataset-fashion-mnist not installed")
def test_debian_fashion_mnist() -> None:
    data = load_data(DataConfig(source="fashion_mnist"), progress=False)
    assert (data.num_train, data.num_val, data.num_classes) == (60000, 10000, 10)
    images, labels = data.train_batch(np.arange(0, 60000, 20))
    assert images.shape == (3000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.min() >= 0 and labels.max() <= 9 and len(labels.unique()) == 10
    assert abs(float(images.mean())) < 0.05 and abs(float(images.std()) - 1.0) < 0.05  # normalized by train stats
    _, val_labels = data.val_batch(np.arange(10000))
    assert torch.bincount(val_labels).tolist() == [1000] * 10
