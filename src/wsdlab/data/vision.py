"""Image datasets as uint8 arrays (N, C, H, W) plus labels; "val" is the official test split.

- Fashion-MNIST: the IDX files of Debian's `dataset-fashion-mnist` package (or `data.path`), parsed
  with numpy, so torchvision is not needed.
- CIFAR-10: the standard "python version" batches (`cifar-10-batches-py/data_batch_1..5`,
  `test_batch`; https://www.cs.toronto.edu/~kriz/cifar.html) or the "binary version"
  (`cifar-10-batches-bin/*.bin`), read here without torchvision from `data.path` or `<cache>/cifar10`
  (never downloaded here). To get them: `pip install 'torchvision==0.28.*'` (the release matching
  torch 2.13) and run `torchvision.datasets.CIFAR10("<cache>/cifar10", download=True)` once, or
  download and untar `cifar-10-python.tar.gz` into that folder. The python batches are pickles of
  plain dicts; they are read with an unpickler that refuses every global but numpy's array rebuild.
Offline, Fashion-MNIST is the option; a missing dataset raises DataUnavailableError naming both.
Normalization statistics (per-channel mean/std of the train split) are computed here; the bundle
applies them per batch, so the full float32 copy of the dataset is never held in memory.
"""

from __future__ import annotations

import gzip
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsdlab.common.errors import ConfigError, DataUnavailableError
from wsdlab.data.config import DataConfig

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# IDX type codes (http://yann.lecun.com/exdb/mnist/): third byte of the magic number.
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class ImageSplits:
    """uint8 images (N, C, H, W) and int64 labels per split, with train-split channel statistics."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    mean: np.ndarray  # (C,) float32, in [0, 1] units
    std: np.ndarray  # (C,) float32
    num_classes: int
    directory: Path


def parse_idx(data: bytes) -> np.ndarray:
    """Decode one IDX array: magic (0, 0, type, ndim), ndim big-endian int32 sizes, then the values."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise ValueError("not an IDX file (bad magic number)")
    ndim = data[3]
    shape = tuple(int(x) for x in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[data[2]])
    offset = 4 + 4 * ndim
    count = int(np.prod(shape)) if shape else 1
    if len(data) - offset < count * dtype.itemsize:
        raise ValueError(f"IDX file truncated: expected {count} values of shape {shape}")
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)


def read_idx(path: Path) -> np.ndarray:
    """An IDX array from a (possibly gzipped) file."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        return parse_idx(raw)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def channel_stats(images: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 images (N, C, H, W) scaled to [0, 1], in float64 chunks."""
    c = images.shape[1]
    total = np.zeros(c)
    total_sq = np.zeros(c)
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].astype(np.float64) / 255.0
        total += x.sum(axis=(0, 2, 3))
        total_sq += np.square(x).sum(axis=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-8).astype(np.float32)


CIFAR10_HOW = ("CIFAR-10 (data.source: cifar10) needs its python batches (cifar-10-batches-py/) in {where}: "
               "`pip install 'torchvision==0.28.*'` and run torchvision.datasets.CIFAR10('{where}', download=True) "
               "once, or untar cifar-10-python.tar.gz there, or set data.path")
FMNIST_HOW = ("Fashion-MNIST (data.source: fashion_mnist) works offline: `apt-get install dataset-fashion-mnist` "
              "(files in " + str(FASHION_MNIST_DIR) + "), or set data.path to a directory of its IDX files")


def fashion_mnist_dir(path: str | Path | None) -> Path:
    """Where Fashion-MNIST is looked for: `data.path`, else Debian's folder (FASHION_MNIST_DIR)."""
    return Path(path).expanduser() if path else FASHION_MNIST_DIR


def find_idx(root: Path, name: str) -> Path | None:
    """`root/name`, or its un-gzipped twin, whichever is a file; None when neither is."""
    return next((p for p in (root / name, root / name.removesuffix(".gz")) if p.is_file()), None)


def missing_fashion_mnist(root: Path) -> list[Path]:
    """The Fashion-MNIST files (as `root/name`) that `root` lacks; empty when it has them all."""
    return [root / name for pair in FASHION_MNIST_FILES.values() for name in pair if find_idx(root, name) is None]


def _idx_path(root: Path, name: str) -> Path:
    """`root/name`, or its un-gzipped twin; DataUnavailableError naming both image datasets otherwise."""
    path = find_idx(root, name)
    if path is not None:
        return path
    names = ", ".join(n for pair in FASHION_MNIST_FILES.values() for n in pair)
    raise DataUnavailableError(
        f"Fashion-MNIST file {root / name} not found: `apt-get install dataset-fashion-mnist`, "
        f"or set data.path to a directory holding {names}; or use "
        + CIFAR10_HOW.format(where="<cache>/cifar10")
    )


def load_fashion_mnist(directory: str | Path | None = None) -> ImageSplits:
    """Fashion-MNIST (train 60k / test 10k, 1x28x28, 10 classes) from its IDX files."""
    root = fashion_mnist_dir(directory)
    arrays = {}
    for split, names in FASHION_MNIST_FILES.items():
        images, labels = (read_idx(_idx_path(root, name)) for name in names)
        arrays[split] = (images[:, None, :, :], labels.astype(np.int64))
    return _splits(arrays, 10, root)


def cifar10_dir(cfg: DataConfig, cache_root: Path) -> Path:
    """Where CIFAR-10 is looked for: `data.path`, else `<cache>/cifar10`."""
    return Path(cfg.path).expanduser() if cfg.path else cache_root / "cifar10"


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only (the CIFAR-10 python batches hold nothing else)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        return super().find_class(module, name)


def read_cifar_python_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One python-version batch: a dict with "data" (N, 3072) uint8 rows (1024 R, then G, then B values,
    row-major 32x32) and "labels" (N ints) -> images (N, 3, 32, 32) uint8, labels (N,) int64."""
    try:
        # latin1: the official files are Python 2 pickles (str keys, numpy buffers as str)
        batch = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
        data = batch["data"] if "data" in batch else batch[b"data"]
        labels = batch["labels"] if "labels" in batch else batch[b"labels"]
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
        raise DataUnavailableError(f"{path}: not a CIFAR-10 python batch ({e})") from None
    images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
    return np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64)


def read_cifar_binary_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary-version batch: records of 1 label byte + 3072 image bytes (R, G, B planes of 32x32)."""
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    if raw.size == 0 or raw.size % 3073:
        raise DataUnavailableError(f"{path}: not a CIFAR-10 binary batch ({raw.size} bytes, not a multiple of 3073)")
    records = raw.reshape(-1, 3073)
    return np.ascontiguousarray(records[:, 1:].reshape(-1, 3, 32, 32)), records[:, 0].astype(np.int64)


CIFAR10_LAYOUTS = (  # folder, train files, test file, reader
    ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", read_cifar_python_batch),
    ("cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)], "test_batch.bin", read_cifar_binary_batch),
)


def find_cifar10(directory: Path) -> tuple[Path, tuple] | None:
    """(batch folder, its CIFAR10_LAYOUTS entry) of the first complete layout under `directory` (the batch
    folder itself or its parent); None when there is none."""
    for layout in CIFAR10_LAYOUTS:
        folder, train_names, test_name, _ = layout
        for root in (directory / folder, directory):
            if all((root / n).is_file() for n in [*train_names, test_name]):
                return root, layout
    return None


def load_cifar10(directory: Path) -> ImageSplits:
    """CIFAR-10 (50k / 10k, 3x32x32, 10 classes) from its python (or binary) batches under `directory`
    (the batch folder itself or its parent); DataUnavailableError naming both datasets when absent."""
    found = find_cifar10(directory)
    if found is not None:
        root, (_, train_names, test_name, reader) = found
        parts = [reader(root / n) for n in train_names]
        train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        return _splits({"train": train, "val": reader(root / test_name)}, 10, root)
    raise DataUnavailableError(f"CIFAR-10 not found in {directory}. " + CIFAR10_HOW.format(where=directory)
                               + "; or use " + FMNIST_HOW)


def _splits(arrays: dict[str, tuple[np.ndarray, np.ndarray]], num_classes: int, directory: Path) -> ImageSplits:
    (tr_x, tr_y), (va_x, va_y) = arrays["train"], arrays["val"]
    for split, (x, y) in arrays.items():
        if x.ndim != 4 or len(x) != len(y):
            raise ValueError(f"{directory}: {split} images {x.shape} do not match labels {y.shape}")
    mean, std = channel_stats(tr_x)
    return ImageSplits(tr_x, tr_y, va_x, va_y, mean, std, num_classes, directory)


def normalize(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """uint8 (B, C, H, W) -> float32 (x / 255 - mean) / std per channel."""
    x = images.astype(np.float32) / 255.0
    return (x - mean[None, :, None, None]) / std[None, :, None, None]


def load_images(cfg: DataConfig, cache_root: Path) -> ImageSplits:
    """The image dataset `cfg.source` names."""
    if cfg.source == "fashion_mnist":
        return load_fashion_mnist(cfg.path)
    if cfg.source == "cifar10":
        return load_cifar10(cifar10_dir(cfg, cache_root))
    raise ConfigError(f"data.source: '{cfg.source}' is not an image dataset")
