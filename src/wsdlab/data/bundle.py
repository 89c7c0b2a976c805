"""`load_data(cfg) -> DataBundle`: one interface to packed token corpora and image datasets.

A batch is what `wsdlab.models.batch_loss` takes: a LongTensor (B, seq_len + 1) for language
models, `(images (B,C,H,W) float32, labels (B,) long)` for image models. Batches are gathered by
train/val item index; which indices a run reads is `SequenceOrder`'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from wsdlab.common.types import Batch
from wsdlab.data.config import DataConfig
from wsdlab.data.orders import SequenceOrder
from wsdlab.data.shards import META_FILE, TOKENIZER_FILE, cache_root, corpus_dir, prepare_corpus, read_meta
from wsdlab.data.vision import ImageSplits, load_images, normalize


def _as_indices(indices: np.ndarray | Sequence[int], size: int, split: str) -> np.ndarray:
    """int64 index array, checked to lie in [0, size)."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        raise IndexError(f"{split} index out of range [0, {size}): min {idx.min()}, max {idx.max()}")
    return idx


class DataBundle:
    """What a run needs from its data: sizes, batches by index, and (LMs) decoding."""

    config: DataConfig
    num_train: int
    num_val: int
    vocab_size: int | None = None
    num_classes: int | None = None
    tokens_per_item: int = 1
    directory: Path | None = None
    tokenizer: Tokenizer | None = None

    def train_batch(self, indices: np.ndarray) -> Batch:
        raise NotImplementedError

    def val_batch(self, indices: np.ndarray) -> Batch:
        raise NotImplementedError

    def decode(self, ids: Any) -> str:
        raise ValueError(f"data.source '{self.config.source}' has no tokenizer to decode with")

    def order(self) -> SequenceOrder:
        """The stream order of `config.order` over this bundle's train items."""
        return SequenceOrder(self.config.order, self.num_train)


class TokenBundle(DataBundle):
    """A prepared corpus: memmapped (N, seq_len + 1) token arrays and the tokenizer."""

    def __init__(self, directory: str | Path, config: DataConfig) -> None:
        self.directory = Path(directory)
        self.config = config
        self.meta = read_meta(self.directory)
        self.train = np.load(self.directory / "train.npy", mmap_mode="r")
        self.val = np.load(self.directory / "val.npy", mmap_mode="r")
        self.tokenizer = Tokenizer.from_file(str(self.directory / TOKENIZER_FILE))
        self.num_train, self.num_val = int(self.train.shape[0]), int(self.val.shape[0])
        self.vocab_size = int(self.meta["vocab_size"])
        self.separator_id = int(self.meta["separator_id"])
        self.seq_len = int(self.train.shape[1]) - 1
        self.tokens_per_item = self.seq_len

    def _gather(self, array: np.ndarray, indices: np.ndarray, split: str) -> torch.Tensor:
        idx = _as_indices(indices, len(array), split)
        return torch.from_numpy(array[idx].astype(np.int64))

    def train_batch(self, indices: np.ndarray) -> torch.Tensor:
        """LongTensor (B, seq_len + 1) of train sequences `indices` (in the given order)."""
        return self._gather(self.train, indices, "train")

    def val_batch(self, indices: np.ndarray) -> torch.Tensor:
        """LongTensor (B, seq_len + 1) of val sequences `indices`."""
        return self._gather(self.val, indices, "val")

    def decode(self, ids: Any) -> str:
        """Text of a 1-D sequence of token ids (list, array or tensor); separators are kept visible."""
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().reshape(-1).tolist()
        else:
            ids = np.asarray(ids).reshape(-1).tolist()
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


class ImageBundle(DataBundle):
    """An image dataset held as uint8, normalized per batch with the train split's channel statistics."""

    def __init__(self, splits: ImageSplits, config: DataConfig) -> None:
        self.config = config
        self.splits = splits
        self.directory = splits.directory
        self.num_train, self.num_val = len(splits.train_labels), len(splits.val_labels)
        self.num_classes = splits.num_classes
        self.tokens_per_item = 1
        self.image_shape = tuple(splits.train_images.shape[1:])

    def _gather(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray, split: str) -> Batch:
        idx = _as_indices(indices, len(labels), split)
        x = normalize(images[idx], self.splits.mean, self.splits.std)
        return torch.from_numpy(x), torch.from_numpy(labels[idx])

    def train_batch(self, indices: np.ndarray) -> Batch:
        """(images (B,C,H,W) float32 normalized, labels (B,) int64) of train items `indices`."""
        return self._gather(self.splits.train_images, self.splits.train_labels, indices, "train")

    def val_batch(self, indices: np.ndarray) -> Batch:
        """The same from the official test split."""
        return self._gather(self.splits.val_images, self.splits.val_labels, indices, "val")


def load_data(cfg: DataConfig, progress: bool = True) -> DataBundle:
    """The bundle of `cfg`, preparing (and caching) a token corpus on first use."""
    if cfg.is_vision:
        return ImageBundle(load_images(cfg, cache_root(cfg)), cfg)
    if cfg.sft is not None:  # prompt/response pairs with loss masks (fine-tuning), the corpus's tokenizer
        from wsdlab.data.sft import SFTBundle

        return SFTBundle(cfg, progress=progress)  # type: ignore[return-value]
    return TokenBundle(prepare_corpus(cfg, progress=progress), cfg)


def prepared_marker(cfg: DataConfig) -> Path | None:
    """The file whose existence means `load_data(cfg)` prepares nothing: the token corpus's meta.json
    (written last). None where there is no corpus to prepare (image datasets, SFT pairs on a
    pretrained tokenizer). Ranks other than 0 wait for it while rank 0 prepares."""
    if cfg.is_vision or (cfg.sft is not None and cfg.tokenizer == "pretrained" and cfg.tokenizer_path):
        return None
    return corpus_dir(cfg.model_copy(update={"sft": None})) / META_FILE
